"""atomic_output: outputs appear whole or not at all."""

from __future__ import annotations

import pytest

from ImagingBasics.errors import UserError
from ImagingBasics.files import atomic_folder, atomic_output, file_extension


def test_success_renames_and_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "sub" / "result.nii.gz"
    with atomic_output(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".nii.gz") and tmp.name.startswith(".")
        tmp.write_text("new")
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "new"  # the old, complete file is still there
    assert [p.name for p in target.parent.iterdir()] == ["result.nii.gz"]  # no temporary file left


def test_unwritable_destination_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="could not write"):
        with atomic_output(blocker / "out.csv") as tmp:
            tmp.write_text("never")


def test_file_extension():
    assert file_extension("a/b/CT.NII.GZ") == ".nii.gz"
    assert file_extension("x.nrrd") == ".nrrd" and file_extension("noext") == ""


def test_a_folder_is_replaced_whole_on_success_and_untouched_on_failure(tmp_path):
    target = tmp_path / "case"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "new.txt").write_text("half")
            raise RuntimeError("stopped")
    assert [p.name for p in target.iterdir()] == ["old.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["case"]
    with atomic_folder(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".case.partial-")
        (tmp / "new.txt").write_text("whole")
    assert [p.name for p in target.iterdir()] == ["new.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["case"]
