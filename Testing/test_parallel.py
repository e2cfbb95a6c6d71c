"""Worker processes for per-case jobs: same results as in-process, errors passed through unchanged."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from CTPerfusionMappingLib.training import dataset
from ImagingBasics.errors import UserError
from ImagingBasics.parallel import default_workers, map_in_processes


def test_results_in_input_order_in_and_out_of_process():
    seen = []
    values = [16.0, 1.0, 9.0, 4.0]
    assert map_in_processes(math.sqrt, values, workers=2, progress=lambda d, t, r: seen.append((d, t, r))) == [4.0, 1.0, 3.0,
                                                                                                                   2.0]
    assert seen == [(1, 4, 4.0), (2, 4, 1.0), (3, 4, 3.0), (4, 4, 2.0)]
    assert map_in_processes(math.sqrt, values, workers=1) == [4.0, 1.0, 3.0, 2.0]
    assert default_workers() >= 1


def test_a_failing_job_raises_its_own_error(tmp_path):
    with pytest.raises(ValueError, match="math domain error"):
        map_in_processes(math.sqrt, [4.0, -1.0], workers=2)
    row = {"id": "p7", "ct": str(tmp_path / "missing.nrrd"), "spect": str(tmp_path / "missing_spect.nrrd")}
    job = (row, tmp_path / "p7.npz", dataset.PreprocessParams(), True, "auto")
    with pytest.raises(UserError, match=r"^case p7: .*missing\.nrrd"):
        map_in_processes(dataset._cache_case, [job, job], workers=2)
    assert not (tmp_path / "p7.npz").exists()


def _process_state(pid):
    """The one-letter state of process ``pid`` from /proc (None once it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def _children(pid):
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_their_parent_is_killed(tmp_path):
    """A parent killed outright cannot shut its pool down: its workers must not go on with the queued jobs."""
    script = ("import time\nfrom ImagingBasics.parallel import map_in_processes\n"
              "if __name__ == '__main__':\n    map_in_processes(time.sleep, [60.0] * 4, workers=2)\n")
    (tmp_path / "sleepers.py").write_text(script)
    parent = subprocess.Popen([sys.executable, str(tmp_path / "sleepers.py")], cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        deadline = time.monotonic() + 60
        workers = []
        while time.monotonic() < deadline and len(workers) < 2:
            time.sleep(0.2)
            workers = [pid for pid in _children(parent.pid)
                       if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]
        assert len(workers) == 2, "the pool's two workers did not start"
        time.sleep(1.0)  # the workers have run their initialiser and took a job each
        assert all(_process_state(pid) not in (None, "Z") for pid in workers)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_process_state(pid) not in (None, "Z") for pid in workers):
        time.sleep(0.2)
    alive = [pid for pid in workers if _process_state(pid) not in (None, "Z")]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, "workers of a killed parent are still running"
