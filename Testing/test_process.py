"""The child-process protocol the Slicer module uses: progress lines, results, errors and Cancel, on real processes."""

import os
import sys
import time
from pathlib import Path

import pytest

from CTPerfusionMappingLib.cli import build_parser
from CTPerfusionMappingLib.slicer_glue import commands
from CTPerfusionMappingLib.synthetic.cohort import generate_case, write_case
from ImagingBasics import process
from ImagingBasics.errors import UserError


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    return write_case(generate_case(21, "small", pathology_probabilities={"tumour": 1.0}),
                      tmp_path_factory.mktemp("process") / "case")


def _python(code: str):
    return [sys.executable, "-c", code]


def test_protocol_lines_round_trip_and_other_lines_are_text():
    line = process.progress_line({"progress": 0.25, "step": "registration"})
    assert line.startswith("@ctpm ") and process.parse_line(line) == {"progress": 0.25, "step": "registration"}
    assert process.parse_line("lungs: right 2260 mL") is None
    assert process.parse_line("@ctpm {not json") is None
    assert process.parse_line("@ctpm [1, 2]") is None


def test_run_command_is_a_valid_ctpm_run(tmp_path):
    cmd = commands.run_command("ct.nrrd", tmp_path, spect="s.nrrd", lobes="l.nrrd", device="cpu", register=False,
                              threshold=0.7, mc_dropout_passes=3, baseline=True)
    assert cmd[:4] == [sys.executable, "-m", "CTPerfusionMappingLib.cli", "run"]
    args = build_parser().parse_args(cmd[3:])
    assert (args.ct, args.spect, args.lobes, args.lungs) == ("ct.nrrd", "s.nrrd", "l.nrrd", None)
    assert not args.register and args.baseline and args.progress_lines and args.mc_dropout_passes == 3
    assert args.threshold == 0.7 and args.device == "cpu" and args.out == tmp_path
    env = commands.child_environment({"PYTHONPATH": "/elsewhere"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(process.LIB_PARENT), str(commands.CTPM_LIB_PARENT), "/elsewhere"]
    assert (process.LIB_PARENT / "ImagingBasics" / "process.py").is_file()
    assert (commands.CTPM_LIB_PARENT / "CTPerfusionMappingLib" / "cli.py").is_file()


def test_blocking_run_reports_progress_and_its_output_folder(case, tmp_path):
    seen = []
    out = process.run_blocking(commands.run_command(case / "ct.nrrd", tmp_path / "out", spect=case / "spect.nrrd",
                                                    device="cpu"),
                               on_progress=lambda f, step: seen.append((f, step)), timeout_s=300,
                               env=commands.child_environment())
    assert Path(out) == (tmp_path / "out").resolve()
    assert (Path(out) / "perfusion.nrrd").is_file() and (Path(out) / "metrics.json").is_file()
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    steps = [s for _, s in seen]
    assert "registration" in steps and "network" in steps and steps[-1] == "done"


def test_a_user_error_in_the_child_surfaces_its_message(tmp_path):
    proc = process.PipelineProcess(commands.run_command(tmp_path / "missing.nrrd", tmp_path / "out", baseline=True),
                                   env=commands.child_environment()).start()
    assert proc.wait(timeout_s=120) == 2
    with pytest.raises(UserError, match=r"^.*missing\.nrrd.*not found|not found.*missing\.nrrd"):
        proc.check()
    assert not (tmp_path / "out" / "perfusion.nrrd").exists()


def test_a_crash_in_the_child_reports_the_exception_line():
    proc = process.PipelineProcess(_python("print('working'); raise RuntimeError('boom in the child')")).start()
    text = []
    proc.on_text = text.append
    assert proc.wait(timeout_s=60) == 1
    assert text == ["working"]
    with pytest.raises(UserError, match="the pipeline process failed: RuntimeError: boom in the child"):
        proc.check()
    ok = process.PipelineProcess(_python("print('no protocol')")).start()
    ok.wait(timeout_s=60)
    with pytest.raises(UserError, match="without reporting"):
        ok.check()


def test_cancel_kills_the_child_and_what_it_started(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    code = ("import subprocess, sys, time\n"
            "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            f"open({str(pid_file)!r}, 'w').write(str(g.pid))\n"
            "print('@ctpm {\"progress\": 0.1, \"step\": \"working\"}', flush=True)\n"
            "time.sleep(120)\n")
    proc = process.PipelineProcess(_python(code)).start()
    t0 = time.monotonic()
    while proc.step != "working" and time.monotonic() - t0 < 30:
        proc.poll()
        time.sleep(0.05)
    assert proc.progress == 0.1
    grandchild = int(pid_file.read_text())
    proc.cancel()
    assert proc.returncode is not None and proc.returncode != 0
    for _ in range(100):  # the grandchild is gone too (killed with the process group; reaped by init)
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        with open(f"/proc/{grandchild}/stat") as f:  # a zombie awaiting its reaper counts as gone
            assert f.read().split()[2] == "Z"
    with pytest.raises(UserError, match="cancelled"):
        proc.check()


def test_a_timeout_stops_the_child():
    proc = process.PipelineProcess(_python("import time; time.sleep(60)")).start()
    with pytest.raises(UserError, match="did not finish within 1 s"):
        proc.wait(timeout_s=1)
    assert proc.returncode is not None
