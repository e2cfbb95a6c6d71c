"""The job of a Slicer module: one pipeline child process with its temporary folder (pure Python, no Slicer: the
tests run it on real child processes).

A module's Logic writes its input nodes into a new temporary folder, starts the child (``ctpm run``, ``dosecnn run``
or ``dosecnn integrate`` with progress lines, :mod:`ImagingBasics.process`), and after the child has ended imports
the results from the child's output folder. The folder is removed when the job is cancelled, when starting or waiting
fails, and once the results are imported: nothing is left behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, List, Optional

from ImagingBasics.process import PipelineProcess

Progress = Optional[Callable[[float, str], None]]


class PipelineJob:
    """A child process (``process``, a :class:`~ImagingBasics.process.PipelineProcess`), its temporary folder
    (``workdir``), the request it runs and what the export of the inputs wrote (``inputs``)."""

    def __init__(self, workdir: str, request: Any, inputs: Optional[Dict[str, Any]] = None):
        self.workdir = workdir
        self.request = request
        self.inputs: Dict[str, Any] = inputs or {}
        self.process: Optional[PipelineProcess] = None

    def start(self, command: List[str], env: Dict[str, str], onProgress: Progress = None) -> PipelineJob:
        self.process = PipelineProcess(command, env=env, on_progress=onProgress).start()
        return self

    def poll(self) -> bool:
        """Hand over the child's progress (calls ``onProgress``); True while it runs."""
        return self.process.poll()

    def wait(self, timeoutSeconds: Optional[float] = None) -> int:
        """Block until the child ends (a timeout stops it); the folder is removed when waiting fails."""
        try:
            return self.process.wait(timeoutSeconds)
        except BaseException:
            self.cleanup()
            raise

    def cancel(self) -> None:
        """Stop the child and everything it started, and remove the folder; :meth:`outputFolder` then raises
        'cancelled'."""
        if self.process is not None:
            self.process.cancel()
        self.cleanup()

    def outputFolder(self) -> str:
        """After the child ended: its output folder, or a UserError with its one-line error (or 'cancelled')."""
        return self.process.check()

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def startJob(temporaryRoot: str, prefix: str, request: Any, exportInputs: Callable[[Any, str], Dict[str, Any]],
             childCommand: Callable[[Any, Dict[str, Any], str], List[str]], env: Dict[str, str],
             onProgress: Progress = None) -> PipelineJob:
    """A started job: a new folder ``<temporaryRoot>/<prefix>XXXX``, ``exportInputs(request, folder)`` (returns what it
    wrote), ``childCommand(request, inputs, outputFolder)``, the child started with ``env``. Whatever fails on the way
    removes the folder again."""
    job = PipelineJob(tempfile.mkdtemp(prefix=prefix, dir=temporaryRoot), request)
    try:
        job.inputs = exportInputs(request, job.workdir)
        command = childCommand(request, job.inputs, os.path.join(job.workdir, "out"))
        logging.info(" ".join(command))
        job.start(command, env, onProgress)
    except BaseException:
        job.cleanup()
        raise
    return job
