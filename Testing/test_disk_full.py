"""A full disk gives one line that says so, and leaves no partial file, for every kind of output the project writes.

The full disk is real: a 256 kB tmpfs mounted for the test (skipped where mounting is not permitted).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from ImagingBasics.errors import UserError
from ImagingBasics.files import save_figure, write_csv, write_json
from ImagingBasics.imageio import write_volume
from ImagingBasics.volume import Volume


@pytest.fixture
def full_disk(tmp_path):
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root): " + mounted.stderr.decode(errors="replace").strip())
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)  # lazy: also when a writer still holds a file


def _noise(shape=(64, 64, 64)) -> np.ndarray:
    return np.random.default_rng(0).normal(size=shape).astype(np.float32)  # does not compress


def _writers(folder: Path):
    yield "volume", lambda: write_volume(Volume(_noise()), folder / "map.nrrd")
    yield "csv", lambda: write_csv([{"x": "y" * 1000}] * 400, folder / "table.csv")
    yield "json", lambda: write_json({"values": _noise((8, 64, 64)).ravel().tolist()}, folder / "metrics.json")

    def figure():
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(20, 20))
        ax.imshow(_noise((1, 512, 512))[0])
        save_figure(fig, folder / "overview.png", dpi=100)

    yield "figure", figure

    def checkpoint():
        torch = pytest.importorskip("torch")
        from ImagingBasics.checkpoints import write_checkpoint

        write_checkpoint({"format": "test", "state_dict": {"w": torch.from_numpy(_noise())}}, folder / "w.pt")

    yield "checkpoint", checkpoint


def test_every_writer_says_the_disk_is_full_and_leaves_nothing(full_disk):
    for name, write in _writers(full_disk):
        with pytest.raises(UserError) as info:
            write()
        message = str(info.value)
        assert "no space left on the device" in message and "\n" not in message, (name, message)
        assert list(full_disk.iterdir()) == [], f"{name} left {list(full_disk.iterdir())}"
