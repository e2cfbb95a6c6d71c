"""The Monte Carlo truth cache of ``dosecnn demo`` (DoseCNNLib.phantoms.truth_cache) and the demo's reduced setup.

A counting wrapper around ``DoseCNNLib.physics.monte_carlo.run_mc`` shows whether the truth was computed or read from
the cache. One test runs the real engine (tiny grid, few decays: cached and fresh truths must be bit-identical); the
others use a fast stand-in with the engine's output attributes, since they test the cache, not the physics.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

import DoseCNNLib.physics.monte_carlo as mc
from DoseCNNLib.cli import main as dosecnn
from DoseCNNLib.phantoms import torso as T
from DoseCNNLib.phantoms import truth_cache as TC
from DoseCNNLib.phantoms.case import generate_case

TINY = ((40, 32, 8), (4.0, 4.0, 8.0))  # 160 x 128 x 64 mm: a part of the torso, coarse voxels


class Counter:
    """Wraps ``run_mc`` (the real one or :func:`_fake_run_mc`) and counts its calls."""

    def __init__(self, run):
        self.run, self.calls = run, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.run(*args, **kwargs)


def _fake_run_mc(activity, ct, n_decays=0, batches=2, device="cpu", seed=0, **_):
    """Deterministic per seed, like the engine; the attributes the truth uses (mGy/s per MBq, relative error)."""
    rng = np.random.default_rng(seed)
    dose = (activity.array > 0) * 1e-3 + rng.uniform(0, 1e-5, activity.shape)
    return SimpleNamespace(dose_rate_mgy_s=ct.with_array(dose.astype(np.float32)),
                           relative_uncertainty=ct.with_array(np.full(activity.shape, 0.05, np.float32)))


@pytest.fixture()
def fake_mc(monkeypatch):
    counter = Counter(_fake_run_mc)
    monkeypatch.setattr(mc, "run_mc", counter)
    return counter


def _case(cache, seed=4, decays=6000, runs=3):
    return generate_case(seed, grid_override=TINY, mc_decays=decays, mc_runs=runs, truth_cache=cache)


def _same_truth(a, b) -> bool:
    return (all(np.array_equal(x.array, y.array) for x, y in zip(a.dose_rate_mgy_s, b.dose_rate_mgy_s))
            and all(np.array_equal(x.array, y.array) for x, y in zip(a.dose_rate_sd_mgy_s, b.dose_rate_sd_mgy_s))
            and np.array_equal(a.absorbed_dose_gy.array, b.absorbed_dose_gy.array)
            and a.truth_label_errors == b.truth_label_errors)


def test_real_truth_is_computed_once_then_read_back_bit_identical(tmp_path, monkeypatch):
    counter = Counter(mc.run_mc)
    monkeypatch.setattr(mc, "run_mc", counter)
    first = _case(tmp_path, decays=3000, runs=2)
    computed = counter.calls
    assert computed == 2 * len(first.meta["kinetics"]) and first.meta["monte_carlo"]["cache"] == "miss"
    second = _case(tmp_path, decays=3000, runs=2)
    assert counter.calls == computed and second.meta["monte_carlo"]["cache"] == "hit"  # the engine was not called
    fresh = _case(None, decays=3000, runs=2)  # no cache: computed again, the same seeds
    assert counter.calls == 2 * computed and "cache" not in fresh.meta["monte_carlo"]
    assert _same_truth(first, second) and _same_truth(first, fresh)
    errors = first.truth_label_errors
    assert errors and all(e["mean_absorbed_dose_se_gy"] > 0 for e in errors.values())


def test_truth_from_worker_processes_is_bit_identical(tmp_path):
    """The real engine, compartments simulated in 2 spawned processes vs one after the other in this process: each
    compartment has its own seed, so the truth (dose rates, their errors, the per-label errors) is the same."""
    serial = generate_case(4, grid_override=TINY, mc_decays=3000, mc_runs=2, truth_cache=None)
    said = []
    parallel = generate_case(4, grid_override=TINY, mc_decays=3000, mc_runs=2, truth_cache=None, mc_workers=2,
                             progress=said.append)
    assert _same_truth(serial, parallel)
    n = len(serial.meta["kinetics"])
    assert f"Monte Carlo of {n} compartments in 2 processes" in said
    assert sum(m.startswith("Monte Carlo ") and "decays in 2 runs" in m for m in said) == n  # one line per compartment


def test_demo_command_workers_default_to_the_cores_and_are_checked(monkeypatch, tmp_path, capsys):
    import DoseCNNLib.demo as demo

    seen = []
    monkeypatch.setattr(demo, "run_demo", lambda *a, **kw: seen.append(kw["workers"]) or {})
    monkeypatch.setattr(demo, "print_summary", lambda summary: None)
    monkeypatch.setenv("DOSECNN_CACHE", str(tmp_path / "cache"))
    assert dosecnn(["demo", "--out", str(tmp_path / "a")]) == 0
    assert dosecnn(["demo", "--out", str(tmp_path / "b"), "--workers", "1"]) == 0
    assert seen == [os.cpu_count() or 1, 1]
    assert dosecnn(["demo", "--out", str(tmp_path / "c"), "--workers", "0"]) == 2
    assert "error: --workers must be at least 1" in capsys.readouterr().err


def _computed(counter, **kwargs):
    """(the case, the engine calls it made)."""
    before = counter.calls
    case = _case(**kwargs)
    return case, counter.calls - before


def test_a_different_seed_or_decay_count_misses_the_cache(tmp_path, fake_mc):
    case, calls = _computed(fake_mc, cache=tmp_path)
    assert calls == 3 * len(case.meta["kinetics"])  # 3 runs per compartment
    for change in ({"seed": 5}, {"decays": 9000}):
        other, calls = _computed(fake_mc, cache=tmp_path, **change)
        assert other.meta["monte_carlo"]["cache"] == "miss" and calls == 3 * len(other.meta["kinetics"]), change
    assert len(list(tmp_path.glob("mc_truth_*.npz"))) == 3
    case, calls = _computed(fake_mc, cache=tmp_path)
    assert case.meta["monte_carlo"]["cache"] == "hit" and calls == 0


def test_a_change_of_the_monte_carlo_code_misses_the_cache(tmp_path, fake_mc, monkeypatch):
    _case(tmp_path)
    monkeypatch.setattr(TC, "code_digest", lambda: "another engine")
    assert _case(tmp_path).meta["monte_carlo"]["cache"] == "miss"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "nan", "other key"])
def test_a_damaged_cache_file_is_recomputed_with_a_warning(tmp_path, fake_mc, damage):
    good = _case(tmp_path)
    calls = fake_mc.calls
    path = next(tmp_path.glob("mc_truth_*.npz"))
    if damage == "garbage":
        path.write_bytes(b"not a cache file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        with np.load(path) as f:
            data = {k: f[k] for k in f.files}
        if damage == "nan":
            data["dose_rate_mgy_s"][0, 0, 0, 0] = np.nan
        else:
            data["key"] = np.array(json.dumps({**json.loads(str(data["key"])), "seed": 99}, sort_keys=True))
        with open(path, "wb") as f:
            np.savez(f, **data)
    with pytest.warns(UserWarning, match="cached Monte Carlo truth .* cannot be used"):
        again = _case(tmp_path)
    assert fake_mc.calls == 2 * calls and again.meta["monte_carlo"]["cache"] == "miss"
    assert _same_truth(good, again)
    assert _case(tmp_path).meta["monte_carlo"]["cache"] == "hit"  # rewritten: valid again


def test_without_a_cache_folder_the_truth_is_computed_and_the_cache_untouched(tmp_path, fake_mc):
    _case(tmp_path)
    path = next(tmp_path.glob("mc_truth_*.npz"))
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    calls = fake_mc.calls
    _case(None)
    assert fake_mc.calls == 2 * calls
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_an_unwritable_cache_is_a_warning_not_an_error(tmp_path, fake_mc, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise OSError("read-only file system")

    monkeypatch.setattr(TC.np, "savez", refuse)
    with pytest.warns(UserWarning, match="not cached"):
        case = _case(tmp_path)
    assert case.meta["monte_carlo"]["cache"] == "miss" and case.meta["monte_carlo"]["cache_file"] is None
    assert not list(tmp_path.iterdir())  # no temporary file left behind


def test_the_cache_keeps_the_newest_entries(tmp_path, fake_mc, monkeypatch):
    monkeypatch.setattr(TC, "MAX_ENTRIES", 2)
    for seed in (1, 2, 3):
        _case(tmp_path, seed=seed)
        for old in tmp_path.glob("mc_truth_*.npz"):  # the earlier files older, even where file times are coarse
            os.utime(old, ns=(old.stat().st_mtime_ns - 10**10,) * 2)
    names = sorted(p.name for p in tmp_path.glob("mc_truth_*.npz"))
    assert len(names) == 2 and not any(n.startswith("mc_truth_seed1_") for n in names)


def test_cache_folder_from_the_environment_and_the_platform(monkeypatch, tmp_path):
    monkeypatch.setenv("DOSECNN_CACHE", str(tmp_path / "c"))
    assert TC.default_truth_cache() == tmp_path / "c" / "mc_truth"
    monkeypatch.delenv("DOSECNN_CACHE")
    monkeypatch.setattr(TC.sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert TC.default_truth_cache() == tmp_path / "xdg" / "dosecnn" / "mc_truth"


def test_demo_command_uses_the_cache_unless_no_cache(monkeypatch, tmp_path):
    import DoseCNNLib.demo as demo

    seen = []
    monkeypatch.setattr(demo, "run_demo", lambda *a, **kw: seen.append(kw["truth_cache"]) or {})
    monkeypatch.setattr(demo, "print_summary", lambda summary: None)
    monkeypatch.setenv("DOSECNN_CACHE", str(tmp_path / "cache"))
    assert dosecnn(["demo", "--out", str(tmp_path / "a")]) == 0
    assert dosecnn(["demo", "--out", str(tmp_path / "b"), "--no-cache"]) == 0
    assert seen == [tmp_path / "cache" / "mc_truth", None]


def test_demo_command_refuses_a_cache_path_that_is_a_file(monkeypatch, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("DOSECNN_CACHE", str(tmp_path / "file"))
    assert dosecnn(["demo", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "DOSECNN_CACHE" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_demo_grid_holds_the_largest_body():
    from DoseCNNLib.demo import DEMO_GRID

    (nx, ny, _), (sx, sy, _) = DEMO_GRID
    half_x, half_y = (nx - 1) * sx / 2, (ny - 1) * sy / 2  # the outermost voxel centres (mm)
    axes = np.array([T.draw_torso(np.random.default_rng(seed)).body_semi_axes for seed in range(200)])
    assert axes[:, 0].max() < half_x and axes[:, 1].max() < half_y
