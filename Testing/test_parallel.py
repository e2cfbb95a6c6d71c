"""Worker processes for per-case jobs: same results as in-process, errors passed through unchanged."""

import math

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
