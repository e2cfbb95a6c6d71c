"""Where the dose kernels come from: the bundled tables, a cache, or the Monte Carlo engine.

:func:`kernel_pair_for` returns the (electron, photon) voxel S values (mGy/(MBq*s)) of soft tissue for a voxel size
(:mod:`.tissue_kernels` adds lung and bone, found the same way):
the bundled pair when one matches (``DoseCNN/Resources/Kernels``, or the ``DoseCNNKernels`` package data of a pip
install), else a pair cached in ``~/.cache/dosecnn/kernels`` (or another folder), else one computed now with
:func:`.kernels.voxel_s_values` and cached.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from ImagingBasics.checkpoints import package_data_folders
from ImagingBasics.imageio import read_volume

from .kernels import kernel_parameters, read_kernel_folder, voxel_s_values, write_kernel_folder

#: the bundled kernels of a checkout or a Slicer install (Resources/Kernels beside the package)
BUNDLED_KERNELS = Path(__file__).resolve().parents[2] / "Resources" / "Kernels"


def kernel_roots() -> List[Path]:
    """Folders of bundled kernels: ``Resources/Kernels`` beside this package (checkout, Slicer), then the package data
    ``DoseCNNKernels`` (a regular pip install)."""
    roots = [BUNDLED_KERNELS]
    roots += [p for p in package_data_folders("DoseCNNKernels") if p.resolve() != BUNDLED_KERNELS.resolve()]
    return [r for r in roots if r.is_dir()]


def bundled_kernel_pair(spacing_mm, nuclide: str = "Lu-177",
                        medium: Optional[str] = None) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The shipped (electron, photon) kernels for this voxel size, or None (``dosecnn kernel`` makes others).

    ``medium``: None for Li 2020's soft-tissue pair, else a class of :data:`.tissue_kernels.KERNEL_MEDIA` (the
    ``medium`` recorded in the folder's kernel.json)."""
    for folder in sorted(f for root in kernel_roots() for f in root.glob(f"{nuclide}_*")):
        if _folder_medium(folder) != medium:
            continue
        electron = read_volume(folder / "electron_kernel.nrrd")
        if np.allclose(electron.spacing, spacing_mm, atol=1e-3):
            return electron.array.astype(np.float32), read_volume(folder / "photon_kernel.nrrd").array.astype(np.float32)
    return None


def _folder_medium(folder: Path) -> Optional[str]:
    """The ``medium`` of a kernel folder's kernel.json parameters (None: Li 2020's soft-tissue pair)."""
    import json

    meta = folder / "kernel.json"
    if not meta.is_file():
        return None
    return json.loads(meta.read_text()).get("parameters", {}).get("medium")


def default_kernel_sizes(spacing_mm) -> Tuple[int, int]:
    """(electron, photon) kernel sizes for a voxel size: 9, and the odd size covering >= 100 mm along the finest
    axis, at most 99 (Li 2020 used 9 and 99 at 0.98 mm)."""
    finest = float(min(spacing_mm))
    photon = min(99, int(np.ceil(100.0 / finest)) | 1)
    return 9, max(photon, 9)


def kernel_pair_for(spacing_mm, nuclide: str = "Lu-177", cache_root=None, decays: int = 1_000_000,
                    device: str = "cpu", progress=None) -> Tuple[np.ndarray, np.ndarray]:
    """The (electron, photon) kernels for a voxel size: the bundled pair when it matches, else a cached pair in
    ``cache_root`` (default ``~/.cache/dosecnn/kernels``), else computed now (and cached)."""
    bundled = bundled_kernel_pair(spacing_mm, nuclide)
    if bundled is not None:
        return bundled
    size, photon_size = default_kernel_sizes(spacing_mm)
    params = kernel_parameters(nuclide, spacing_mm, size, photon_size, decays, 0)
    root = Path(cache_root) if cache_root else Path.home() / ".cache" / "dosecnn" / "kernels"
    folder = root / (f"{params['nuclide']}_" + "x".join(f"{s:g}" for s in params["spacing_mm"]) + f"mm_{decays}")
    pair = read_kernel_folder(folder, params)
    if pair is not None:
        return pair
    if progress is not None:
        progress(f"computing the {params['nuclide']} kernels for {params['spacing_mm']} mm voxels ({decays} decays)")
    k = voxel_s_values(params["nuclide"], spacing_mm, size, decays, seed=0, device=device, photon_size=photon_size)
    write_kernel_folder(k, params, folder)
    return k.electron.astype(np.float32), k.photon.astype(np.float32)
