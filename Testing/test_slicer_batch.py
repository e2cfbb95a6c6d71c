"""The Slicer batch script: its argument handling as a plain function, and the script's ``main`` in Slicer (a real MRML
scene, Testing/slicer_real.py): cases loaded with ``slicer.util.loadVolume``, run through the module's Logic as
``slicer.util.getModuleLogic`` finds it, the outputs saved with ``slicer.util.saveNode`` by the real storage nodes."""

import csv

import pytest
from tiny_images import write_tiny_ct, write_tiny_image, write_weights_archive

from CTPerfusionMappingLib.slicer_glue.batch import parse_batch_arguments
from ImagingBasics.errors import UserError


@pytest.fixture
def files(tmp_path):
    write_tiny_ct(tmp_path / "ct.nrrd")  # real files: one case's inputs are checked up front
    write_tiny_image(tmp_path / "spect.nrrd")
    write_tiny_image(tmp_path / "lobes.nrrd", "labels")
    write_weights_archive(tmp_path / "w.pt")
    return tmp_path


def test_one_case(files):
    r = parse_batch_arguments(["--ct", str(files / "ct.nrrd"), "--spect", str(files / "spect.nrrd"), "--out",
                               str(files / "out"), "--device", "cpu", "--threshold", "0.7", "--no-register"])
    assert len(r.cases) == 1 and r.cases[0].out == files / "out" and r.cases[0].spect == str(files / "spect.nrrd")
    assert (r.device, r.threshold, r.register, r.weights, r.segmentation_source) == ("cpu", 0.7, False, None, "Automatic")
    r = parse_batch_arguments(["--ct", str(files / "ct.nrrd"), "--lobes", str(files / "lobes.nrrd"), "--out", "o",
                               "--weights", str(files / "w.pt")])
    assert r.segmentation_source == "Given segmentation" and r.weights == str(files / "w.pt")
    assert r.registration_method == "Automatic"
    r = parse_batch_arguments(["--ct", str(files / "ct.nrrd"), "--out", "o", "--registration", "Built-in"])
    assert r.registration_method == "Built-in"


def test_manifest_cases_get_their_own_folders(files):
    (files / "cases.csv").write_text("id,ct,spect\np1,ct.nrrd,spect.nrrd\np2,ct.nrrd,\n")
    r = parse_batch_arguments(["--manifest", str(files / "cases.csv"), "--out", str(files / "out")])
    assert [c.case_id for c in r.cases] == ["p1", "p2"]
    assert r.cases[0].out == files / "out" / "p1" and r.cases[0].ct == str((files / "ct.nrrd").resolve())
    assert r.cases[1].spect is None


@pytest.mark.parametrize("argv, message", [
    (["--out", "o"], "one of the arguments --ct --manifest is required"),
    (["--ct", "a.nrrd", "--manifest", "m.csv", "--out", "o"], "not allowed with"),
    (["--ct", "{d}/ct.nrrd"], "--out"),
    (["--ct", "{d}/missing.nrrd", "--out", "o"], "missing.nrrd not found"),
    (["--ct", "{d}/ct.nrrd", "--out", "o", "--threshold", "1.5"], "--threshold"),
    (["--ct", "{d}/ct.nrrd", "--out", "o", "--device", "tpu"], "invalid choice"),
    (["--ct", "{d}/ct.nrrd", "--out", "o", "--weights", "{d}/none.pt"], "weights not found"),
    (["--manifest", "{d}/ct.nrrd", "--spect", "{d}/spect.nrrd", "--out", "o"], "go with --ct"),
])
def test_bad_arguments_are_one_line_user_errors(files, argv, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        parse_batch_arguments([a.format(d=files) for a in argv])


def test_the_script_runs_each_case_through_the_logic_and_saves_its_outputs(real_slicer, tmp_path, capsys):
    from CTPerfusionMappingLib.network import NetworkConfig, build_model
    from CTPerfusionMappingLib.synthetic.cohort import generate_case, write_case
    from CTPerfusionMappingLib.weights import save_weights
    from ImagingBasics.imageio import read_volume

    slicer = real_slicer.slicer
    real_slicer.module("CTPerfusionMapping")  # loaded, as Slicer loads its modules before running the script
    script = real_slicer.batch_script("CTPerfusionMapping")
    folder = write_case(generate_case(6, "small"), tmp_path / "case")
    config = NetworkConfig(base_channels=2, max_channels=4)
    save_weights(build_model(config), config, tmp_path / "tiny.pt", metadata={"note": "random weights for tests"})
    # p2's "CT" is a SPECT: its run fails, the batch goes on
    (tmp_path / "cases.csv").write_text("id,ct,spect,lobes\np1,case/ct.nrrd,case/spect.nrrd,case/lobes.nrrd\n"
                                        "p2,case/spect.nrrd,,\n")
    out = tmp_path / "out"
    assert script.main(["--manifest", str(tmp_path / "cases.csv"), "--out", str(out), "--weights",
                        str(tmp_path / "tiny.pt"), "--threshold", "0.7", "--no-register", "--device", "cpu"]) == 1
    captured = capsys.readouterr()
    assert "error: case p2: " in captured.err and "1 of 2 cases done; failed: p2" in captured.out
    assert sorted(path.name for path in (out / "p1").iterdir()) == ["functional.seg.nrrd", "perfusion.nrrd",
                                                                    "regions.csv", "regions.schema.csv"]
    assert not (out / "p2").exists() or not any((out / "p2").iterdir())
    perfusion = read_volume(out / "p1" / "perfusion.nrrd")
    assert perfusion.same_geometry(read_volume(folder / "ct.nrrd")) and perfusion.array.max() <= 1.0
    rows = list(csv.DictReader(open(out / "p1" / "regions.csv", encoding="utf-8")))
    assert [row["name"] for row in rows] == ["RUL", "RML", "RLL", "LUL", "LLL", "right lung", "left lung",
                                             "both lungs"]
    assert "Spearman R" not in rows[0] and rows[0]["spearman"]  # the column keys; titles and units in the schema
    segmentation = slicer.util.loadSegmentation(str(out / "p1" / "functional.seg.nrrd"))
    segmentation_ids = [segmentation.GetSegmentation().GetNthSegmentID(i)
                        for i in range(segmentation.GetSegmentation().GetNumberOfSegments())]
    assert segmentation_ids == ["low_function", "high_function", "RUL", "RML", "RLL", "LUL", "LLL"]
    assert not list(real_slicer.temporary.iterdir())
    assert script.main(["--ct", str(folder / "ct.nrrd"), "--out", str(out), "--high-percentile", "99.5"]) == 2
    assert capsys.readouterr().err == "error: --high-percentile must be from 1 to 99, got 99.5\n"
