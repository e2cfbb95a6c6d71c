"""Run the pipeline in a child process: the protocol between ``ctpm run --progress-lines`` (also ``dosecnn run`` and
``dosecnn integrate --progress-lines``) and its caller.

The Slicer modules (CTPerfusionMapping and DoseCNN) run the heavy work (torch, registration) in a PythonSlicer child
process so that the GUI stays responsive and Cancel can stop it; batch scripts and tests run the same child and wait
for it. This module is the caller's side, in pure Python (no Slicer, no Qt), so that it is tested here with real child
processes.

Protocol (the child's stdout, one line each; anything else on stdout is ordinary text):

    @ctpm {"progress": 0.45, "step": "preprocessing"}
    @ctpm {"done": true, "out": "/path/to/output/folder"}

A problem the user can fix ends the child with status 2 and ``error: <message>`` on stderr (every ``ctpm`` and
``dosecnn`` command does that); any other failure ends it with another non-zero status and a traceback on stderr,
whose last line is reported. :class:`PipelineProcess` reads both streams on background threads and hands lines over in
:meth:`poll`, which the GUI calls from its timer (so callbacks run on the GUI thread) and :meth:`wait` calls in a loop.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from .errors import UserError

PREFIX = "@ctpm "
#: the folder that holds ``ImagingBasics`` (put on the child's PYTHONPATH)
LIB_PARENT = Path(__file__).resolve().parent.parent


def progress_line(message: Dict) -> str:
    """One protocol line (what the child prints)."""
    return PREFIX + json.dumps(message, sort_keys=True)


def parse_line(line: str) -> Optional[Dict]:
    """The message of a protocol line, or None for any other line (including a damaged protocol line)."""
    if not line.startswith(PREFIX):
        return None
    try:
        message = json.loads(line[len(PREFIX):])
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def child_environment(base: Optional[Dict[str, str]] = None, extra_paths: Sequence[Path] = ()) -> Dict[str, str]:
    """The environment for the child: ``base`` (default os.environ) with the foundation's folder (then ``extra_paths``,
    the folders holding ``CTPerfusionMappingLib`` or ``DoseCNNLib``) first on PYTHONPATH and unbuffered output
    (progress arrives as it happens)."""
    env = dict(os.environ if base is None else base)
    paths = [str(LIB_PARENT)] + [str(p) for p in extra_paths]
    paths += [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def device_probe_command(python: Optional[str] = None) -> List[str]:
    """The child that reports what torch can compute on (``python -m ImagingBasics.devices --json``; both Slicer
    modules use it, so that torch is never imported into Slicer itself)."""
    return [python or sys.executable, "-m", "ImagingBasics.devices", "--json"]


def device_text(lines: Sequence[str], error_text: str = "") -> str:
    """The device line of a module's GUI from the output lines of :func:`device_probe_command`."""
    for line in lines:
        try:
            report = json.loads(line)
        except ValueError:
            continue
        if not isinstance(report, dict) or "auto" not in report:
            continue
        gpus = ", ".join(report.get("gpus") or []) or "no CUDA GPU visible"
        return f"auto uses {report['auto']} (torch {report.get('torch', '?')}; {gpus})"
    return "Device detection failed: " + (error_text or "no answer from the child process")


class PipelineProcess:
    """A running ``ctpm`` child: progress callbacks, Cancel, and its error text.

    ``on_progress(fraction, step)`` and ``on_text(line)`` are called from :meth:`poll` (and so from :meth:`wait`).
    """

    def __init__(self, command: Sequence[str], env: Optional[Dict[str, str]] = None,
                 on_progress: Optional[Callable[[float, str], None]] = None,
                 on_text: Optional[Callable[[str], None]] = None):
        self.command = list(command)
        self.env = child_environment() if env is None else env
        self.on_progress = on_progress
        self.on_text = on_text
        self.progress = 0.0
        self.step = ""
        self.out: Optional[str] = None
        self.cancelled = False
        self.stderr_lines: List[str] = []
        self._lines: queue.Queue = queue.Queue()
        self._proc: Optional[subprocess.Popen] = None
        self._readers: List[threading.Thread] = []

    def start(self) -> PipelineProcess:
        """Start the child (in its own process group, so that Cancel stops whatever it started)."""
        kwargs = {"start_new_session": True} if os.name == "posix" else {
            "creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}
        try:
            self._proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env,
                                          text=True, encoding="utf-8", errors="replace", bufsize=1, **kwargs)
        except OSError as exc:
            raise UserError(f"cannot start the pipeline process ({self.command[0]}): {exc.strerror or exc}") from None
        for name, stream in (("stdout", self._proc.stdout), ("stderr", self._proc.stderr)):
            reader = threading.Thread(target=self._read, args=(name, stream), daemon=True)
            reader.start()
            self._readers.append(reader)
        return self

    def _read(self, name: str, stream) -> None:
        for line in stream:
            self._lines.put((name, line.rstrip("\r\n")))
        stream.close()

    @property
    def returncode(self) -> Optional[int]:
        return None if self._proc is None else self._proc.poll()

    def poll(self) -> bool:
        """Hand over the lines that arrived; True while the child runs (or its output is still being read)."""
        while True:
            try:
                name, line = self._lines.get_nowait()
            except queue.Empty:
                break
            self._handle(name, line)
        running = self._proc is not None and (self._proc.poll() is None or any(r.is_alive() for r in self._readers))
        return running or not self._lines.empty()

    def _handle(self, name: str, line: str) -> None:
        if name == "stderr":
            self.stderr_lines = (self.stderr_lines + [line])[-200:]
            return
        message = parse_line(line)
        if message is None:
            if self.on_text is not None:
                self.on_text(line)
            return
        if "progress" in message:
            self.progress = float(message["progress"])
            self.step = str(message.get("step", ""))
            if self.on_progress is not None:
                self.on_progress(self.progress, self.step)
        if message.get("done"):
            self.out = message.get("out")

    def cancel(self) -> None:
        """Stop the child and everything it started; :meth:`check` then raises 'cancelled'."""
        self.cancelled = True
        if self._proc is None or self._proc.poll() is not None:
            return
        try:
            if os.name == "posix":
                os.killpg(self._proc.pid, signal.SIGKILL)
            else:  # pragma: no cover - Windows
                subprocess.run(["taskkill", "/F", "/T", "/PID", str(self._proc.pid)], capture_output=True)
        except (ProcessLookupError, PermissionError):
            pass
        self._proc.wait()

    def error_text(self) -> str:
        """The child's ``error:`` message, else the last line of its stderr (a traceback's exception), else ''."""
        errors = [line for line in self.stderr_lines if line.startswith("error: ")]
        if errors:
            return errors[-1][len("error: "):]
        text = [line.strip() for line in self.stderr_lines if line.strip()]
        return text[-1] if text else ""

    def wait(self, timeout_s: Optional[float] = None, interval_s: float = 0.05) -> int:
        """Block until the child ends (calling :meth:`poll`); return its exit status. A timeout cancels it."""
        start = time.monotonic()
        while self.poll():
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                self.cancel()
                raise UserError(f"the pipeline did not finish within {timeout_s:.0f} s and was stopped")
            time.sleep(interval_s)
        return int(self.returncode)

    def check(self) -> str:
        """After the child ended: its output folder, or a UserError with its error text (or 'cancelled')."""
        if self.cancelled:
            raise UserError("cancelled")
        code = self.returncode
        if code is None:
            raise UserError("the pipeline process is still running")
        if code != 0:
            detail = self.error_text() or f"exit status {code}"
            raise UserError(detail if code == 2 else f"the pipeline process failed: {detail}")
        if not self.out:
            raise UserError("the pipeline process ended without reporting its results")
        return self.out


def run_blocking(command: Sequence[str], on_progress: Optional[Callable[[float, str], None]] = None,
                 timeout_s: Optional[float] = None, env: Optional[Dict[str, str]] = None) -> str:
    """Run the child to its end (batch scripts, tests); return its output folder or raise UserError."""
    proc = PipelineProcess(command, env=env, on_progress=on_progress).start()
    proc.wait(timeout_s)
    return proc.check()
