"""Output folders (ImagingBasics/outputs.py) and what the commands do with them: never an input overwritten, never a
file outside --out, never a mix of two runs' files, nothing left behind on failure, Ctrl-C or SIGTERM."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tiny_images import tiny_ct, write_tiny_ct

from CTPerfusionMappingLib.cli import main as ctpm
from DoseCNNLib.cli import main as dosecnn
from ImagingBasics.errors import UserError
from ImagingBasics.imageio import write_volume
from ImagingBasics.manifest import read_manifest
from ImagingBasics.outputs import STAGING_PREFIX, check_output_folder, output_folder

ROOT = Path(__file__).resolve().parents[1]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the output folder itself ----------------------------------------------------------------------------------------
def test_the_checks_before_any_work(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UserError, match="is a file; give a folder"):
        check_output_folder(tmp_path / "file.txt")
    dicom = tmp_path / "series"
    dicom.mkdir()
    with pytest.raises(UserError, match="is one of the inputs"):
        check_output_folder(dicom, inputs=[dicom])
    for inside in (dicom / "results", dicom / "a" / "b"):  # nothing created inside an input folder, not even a test file
        with pytest.raises(UserError, match="lies inside the input folder .*series; give a folder outside it"):
            check_output_folder(inside, inputs=[dicom])
        with pytest.raises(UserError, match="lies inside the input folder"), output_folder(inside, inputs=[dicom]):
            pass
    assert list(dicom.iterdir()) == []
    lobes = tmp_path / "lobes.nrrd"
    lobes.write_text("the user's lobes")
    with pytest.raises(UserError, match="would overwrite the input .*lobes.nrrd"):
        check_output_folder(tmp_path, inputs=[None, lobes], names=["lobes.nrrd", "metrics.json"])
    assert lobes.read_text() == "the user's lobes"
    new = tmp_path / "new" / "folder"
    assert check_output_folder(new, inputs=[lobes], names=["metrics.json"]) == new.resolve()
    assert not (tmp_path / "new").exists()  # tried by writing, then removed: a run refused later leaves nothing


def test_results_are_swapped_in_together_and_stale_ones_go(tmp_path):
    names, out = ["a.nrrd", "b.nrrd", "metrics.json", "map_[0-9].nrrd"], tmp_path / "out"
    with output_folder(out, names=names, completion="metrics.json") as staging:
        for name in ("a.nrrd", "b.nrrd", "map_1.nrrd", "metrics.json"):
            (staging / name).write_text("first")
    (out / "notes.txt").write_text("the user's own file")
    with output_folder(out, names=names, completion="metrics.json") as staging:
        assert not any(p.name.startswith(STAGING_PREFIX) for p in out.iterdir() if p != staging)
        (staging / "a.nrrd").write_text("second")
        (staging / "metrics.json").write_text("second")
    assert sorted(p.name for p in out.iterdir()) == ["a.nrrd", "metrics.json", "notes.txt"]  # b and map_1: stale
    assert (out / "a.nrrd").read_text() == "second" and (out / "notes.txt").read_text() == "the user's own file"


def test_a_failed_run_leaves_the_previous_run_whole_and_no_staging(tmp_path):
    out = tmp_path / "out"
    with output_folder(out, names=["a.nrrd", "metrics.json"], completion="metrics.json") as staging:
        (staging / "a.nrrd").write_text("first")
        (staging / "metrics.json").write_text("first")
    with pytest.raises(RuntimeError):
        with output_folder(out, names=["a.nrrd", "metrics.json"], completion="metrics.json") as staging:
            (staging / "a.nrrd").write_text("half of the second")
            raise RuntimeError("the pipeline failed")
    assert sorted(p.name for p in out.iterdir()) == ["a.nrrd", "metrics.json"]
    assert (out / "a.nrrd").read_text() == "first"
    (out / f"{STAGING_PREFIX}deadbeef").mkdir()  # what a killed run leaves
    with output_folder(out, names=["a.nrrd", "metrics.json"], completion="metrics.json"):
        pass
    assert not any(p.name.startswith(STAGING_PREFIX) for p in out.iterdir())


@pytest.fixture
def read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here (needs root): " + mounted.stderr.decode(errors="replace").strip())
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_an_unwritable_out_is_refused_before_the_run(read_only_folder, tmp_path, capsys):
    ct = write_tiny_ct(tmp_path / "ct.nrrd")
    started = time.monotonic()
    assert ctpm(["run", "--ct", str(ct), "--out", str(read_only_folder / "results"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write into --out") and "Read-only file system" in err and err.count("\n") == 1
    assert time.monotonic() - started < 5  # before the model is loaded


# --- the commands ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from CTPerfusionMappingLib.synthetic.cohort import generate_case, write_case

    return write_case(generate_case(3, "small"), tmp_path_factory.mktemp("outputs") / "case")


def test_ctpm_run_never_overwrites_its_inputs(phantom, capsys):
    before = {p.name: _digest(p) for p in phantom.iterdir() if p.is_file()}
    code = ctpm(["run", "--ct", str(phantom / "ct.nrrd"), "--lobes", str(phantom / "lobes.nrrd"), "--out", str(phantom),
                 "--baseline", "--quiet"])
    assert code == 2 and "would overwrite the input" in capsys.readouterr().err
    assert {p.name: _digest(p) for p in phantom.iterdir() if p.is_file()} == before


def test_a_rerun_without_the_spect_leaves_no_old_spect_on_ct(phantom, tmp_path):
    out = tmp_path / "run"
    args = ["run", "--ct", str(phantom / "ct.nrrd"), "--out", str(out), "--baseline", "--quiet"]
    assert ctpm(args + ["--spect", str(phantom / "spect.nrrd")]) == 0
    assert (out / "spect_on_ct.nrrd").is_file()
    assert ctpm(args) == 0
    assert not (out / "spect_on_ct.nrrd").exists() and (out / "metrics.json").is_file()
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no hidden temporary files


def test_batch_case_ids_stay_under_out(tmp_path, capsys):
    ct = write_tiny_ct(tmp_path / "ct.nrrd")
    (tmp_path / "cases.csv").write_text(f"id,ct\n../../other/case000,{ct}\n")
    assert ctpm(["batch", str(tmp_path / "cases.csv"), "--out", str(tmp_path / "out"), "--baseline", "--quiet"]) == 2
    assert "case id '../../other/case000' is not a plain name" in capsys.readouterr().err
    assert not (tmp_path.parent / "other").exists()
    for good in ("p01", "case_1.b", "A-2"):
        (tmp_path / "ok.csv").write_text(f"id,ct\n{good},{ct}\n")
        assert read_manifest(tmp_path / "ok.csv")[0]["id"] == good
    for bad in (".hidden", "a/b", "a\\b", "..", "x" * 200):
        (tmp_path / "bad.csv").write_text(f"id,ct\n{bad},{ct}\n")
        with pytest.raises(UserError, match="is not a plain name"):
            read_manifest(tmp_path / "bad.csv")


def test_a_manifest_that_is_not_utf8_is_one_line(tmp_path, capsys):
    (tmp_path / "cases.csv").write_bytes("id,ct\nMüller,ct.nrrd\n".encode("latin-1"))
    assert ctpm(["batch", str(tmp_path / "cases.csv"), "--out", str(tmp_path / "out"), "--baseline", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is not UTF-8 text" in err and err.count("\n") == 1


def test_a_damaged_weights_file_is_refused_before_any_dose_is_computed(tmp_path, capsys):
    ct = write_tiny_ct(tmp_path / "ct.nrrd")
    write_volume(tiny_ct().with_array(np.ones((8, 10, 12), np.float32)), tmp_path / "s.nrrd")
    (tmp_path / "w.pt").write_bytes(b"garbage" * 100)
    (tmp_path / "tp.csv").write_text(f"time_h,spect,ct,activity_mbq\n4,s.nrrd,{ct.name},10\n24,s.nrrd,{ct.name},8\n")
    for argv in (["run", "--spect", str(tmp_path / "s.nrrd"), "--ct", str(ct), "--activity-mbq", "10"],
                 ["integrate", str(tmp_path / "tp.csv")]):
        out = tmp_path / argv[0]
        started = time.monotonic()
        assert dosecnn(argv + ["--method", "cnn", "--weights", str(tmp_path / "w.pt"), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err == "error: w.pt is not a readable torch weights file (corrupt or another file type)\n"
        assert time.monotonic() - started < 10 and not out.exists()  # the folder the run created is gone too


def test_sigterm_stops_a_run_and_leaves_nothing_behind(phantom, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "CTPerfusionMapping")]))
    child = subprocess.Popen([sys.executable, "-m", "CTPerfusionMappingLib.cli", "run", "--ct", str(phantom / "ct.nrrd"),
                              "--spect", str(phantom / "spect.nrrd"), "--out", str(out), "--baseline", "--quiet"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(p.name.startswith(STAGING_PREFIX) for p in out.iterdir())):
        assert child.poll() is None and time.monotonic() < deadline, "the run ended before it could be stopped"
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 143 and err.strip().splitlines()[-1] == "error: terminated"
    assert not out.exists()  # staging removed, and the --out the run had created
