"""The residual dose CNN of the DoseCNN paper (Li, Fessler, Mikell, Wilderman and Dewaraja: Li 2020).

Input: a pack of 11 adjacent axial slices of two channels, the normalised activity and the density (g/cm3), centred on
the slice whose dose rate is wanted (:mod:`.data` builds and normalises packs). Output: the normalised dose rate of
the middle slice.

* **Depth features** (Li 2020 "CNN Training"): three 3D convolutions with kernels 7x7x5, 7x7x3, 7x7x3 (in-plane 7x7,
  through-plane 5, 3, 3). No through-plane padding, so 11 slices become 7, 5, then 3; in-plane "same" padding. Each
  convolution is followed by batch normalisation and LeakyReLU(0.1). The 3 remaining slices are folded into channels.
  The paper gives no channel counts: ours (:attr:`DoseNetConfig.depth_channels`, 8-16-16) follow the public
  implementation of the follow-up (DblurDoseNet: 8 then 16 features) and keep a 512x512x130 volume within a minute
  on two CPU cores.
* **2D U-Net** with 4 down- and up-sampling levels and 16 initial filters: 16-32-64-128-128 (the follow-up's widths).
  Encoder: two 3x3 convolutions + batch norm + LeakyReLU(0.1) per level, 2x2 max pooling between levels. Decoder: 2x2
  transposed convolution, concatenation with the encoder's features, two 3x3 convolutions + batch norm + ReLU. A 1x1
  convolution gives one channel: the **correction**.
* **Residual learning**: the correction is added to the VDK dose-rate slice of the middle slice, so the network learns
  Monte Carlo minus VDK. The final 1x1 convolution starts at zero, so an untrained network reproduces the VDK map.
  Users get :func:`physical_dose`: the sum clamped at >= 0 and set to zero in air (HU < -950, as
  :mod:`DoseCNNLib.physics.vdk`); training uses the raw sum (as the follow-up does), so that no voxel's gradient is
  cut off by the clamp.
* In-plane sizes that are not multiples of 2^levels are zero-padded (zero activity, zero density: like air around
  the field of view) and the output cropped back.
* Whole volumes: :meth:`ResidualDoseNet.correction_slab` runs the depth convolutions once over a slab of slices and
  takes every output slice's 3 folded slices from it, which is identical to one pack per slice (the convolutions have
  no through-plane padding) and 7x / 5x / 3x cheaper for the three 3D layers.

Weights: Kaiming-normal initialisation (LeakyReLU slope for the encoder, ReLU for the decoder).

Module layout: the blocks (:class:`DoubleConv2d`, :class:`DepthFeatures`, :class:`UNet2d`) take every option as a
constructor argument; :class:`ResidualDoseNet` reads them from a :class:`DoseNetConfig`. The sub-module names are the
state-dict keys of the weight files (:mod:`.weights`): renaming an attribute breaks the bundled weights.

This module imports torch. The Slicer module, its batch script and ``dosecnn --help`` do not import it at load time
(Testing/test_slicer_contract.py checks which modules may).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


@dataclass(frozen=True)
class DoseNetConfig:
    """Architecture of :class:`ResidualDoseNet` (the defaults are Li 2020's network; tests build tiny ones)."""

    in_channels: int = 2  # activity, density
    slices: int = 11  # slices per pack: the middle one and 5 on each side (Li 2020)
    depth_kernels: Tuple[int, ...] = (5, 3, 3)  # through-plane kernel sizes of the 3D convolutions (Li 2020)
    depth_channels: Tuple[int, ...] = (8, 16, 16)  # output channels of the 3D convolutions (our choice, see above)
    inplane_kernel: int = 7  # in-plane kernel size of the 3D convolutions (Li 2020)
    base_filters: int = 16  # U-Net filters at full resolution (Li 2020)
    levels: int = 4  # U-Net down/up-sampling levels (Li 2020)
    max_filters: int = 128  # widest U-Net level (the follow-up: 16-32-64-128-128)
    negative_slope: float = 0.1  # LeakyReLU of the encoder
    batch_norm: bool = True  # batch normalisation after every convolution but the last

    def __post_init__(self) -> None:
        object.__setattr__(self, "depth_kernels", tuple(int(k) for k in self.depth_kernels))
        object.__setattr__(self, "depth_channels", tuple(int(c) for c in self.depth_channels))
        if len(self.depth_kernels) != len(self.depth_channels) or not self.depth_kernels:
            raise ValueError("depth_kernels and depth_channels must have the same, non-zero length")
        if any(k < 1 for k in self.depth_kernels) or self.inplane_kernel % 2 == 0:
            raise ValueError("kernel sizes must be positive and the in-plane kernel odd")
        if self.folded_depth < 1 or self.folded_depth % 2 == 0 or self.slices % 2 == 0:
            raise ValueError(f"{self.slices} slices leave {self.folded_depth} after the depth convolutions; "
                             "both must be odd and positive")
        if min(self.in_channels, self.base_filters, self.levels, self.max_filters, *self.depth_channels) < 1:
            raise ValueError("channel counts and levels must be at least 1")

    @property
    def folded_depth(self) -> int:
        """Slices left after the depth convolutions (3 for 11 slices and kernels 5, 3, 3)."""
        return self.slices - sum(k - 1 for k in self.depth_kernels)

    @property
    def half_window(self) -> int:
        """Slices on each side of the middle one (5 for 11)."""
        return self.slices // 2

    @property
    def filters(self) -> Tuple[int, ...]:
        """U-Net widths from full resolution to the bottleneck (16, 32, 64, 128, 128 by default)."""
        return tuple(min(self.base_filters * 2 ** i, self.max_filters) for i in range(self.levels + 1))

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["depth_kernels"] = list(self.depth_kernels)
        d["depth_channels"] = list(self.depth_channels)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> DoseNetConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown configuration keys {sorted(unknown)}")
        return cls(**d)


def _norm(channels: int, batch_norm: bool, dims: int = 2) -> nn.Module:
    """Batch normalisation of ``channels`` in 2D or 3D, or the identity when ``batch_norm`` is false."""
    if not batch_norm:
        return nn.Identity()
    return nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm3d(channels)


class DoubleConv2d(nn.Sequential):
    """One U-Net level (Li 2020): (conv k x k, same padding -> batch norm -> activation) x 2.

    ``negative_slope``: LeakyReLU slope (the encoder's), or None for a ReLU (the decoder's). Without ``batch_norm`` the
    convolutions have a bias and the norms are identities (the layer indices, so the state-dict keys, stay the same).
    """

    def __init__(self, in_channels: int, out_channels: int, negative_slope: Optional[float], batch_norm: bool = True,
                 kernel_size: int = 3):
        def activation() -> nn.Module:
            return nn.ReLU(inplace=True) if negative_slope is None else nn.LeakyReLU(negative_slope, inplace=True)

        pad = kernel_size // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=pad, bias=not batch_norm),
            _norm(out_channels, batch_norm), activation(),
            nn.Conv2d(out_channels, out_channels, kernel_size, padding=pad, bias=not batch_norm),
            _norm(out_channels, batch_norm), activation(),
        )


class DepthFeatures(nn.Module):
    """The 3D convolutions of Li 2020: kernels ``(k, inplane_kernel, inplane_kernel)`` for each through-plane ``k`` of
    ``kernels``, valid through-plane (each takes ``k - 1`` slices), same in-plane; batch norm and LeakyReLU after each.
    ``channels`` are their output channels."""

    def __init__(self, in_channels: int, kernels: Sequence[int], channels: Sequence[int], inplane_kernel: int = 7,
                 negative_slope: float = 0.1, batch_norm: bool = True):
        super().__init__()
        layers = []
        cin = in_channels
        pad = inplane_kernel // 2
        for k, cout in zip(kernels, channels):
            layers += [nn.Conv3d(cin, cout, (k, inplane_kernel, inplane_kernel), padding=(0, pad, pad), bias=not batch_norm),
                       _norm(cout, batch_norm, 3), nn.LeakyReLU(negative_slope, inplace=True)]
            cin = cout
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, slices, H, W)`` -> ``(B, channels[-1], slices - sum(k - 1), H, W)``."""
        return self.layers(x)


class UNet2d(nn.Module):
    """2D U-Net of Li 2020: ``len(filters) - 1`` levels of 2x2 max pooling down and 2x2 transposed convolutions up,
    concatenation skips, LeakyReLU(``negative_slope``) encoder, ReLU decoder, a 1x1 convolution to one channel."""

    def __init__(self, in_channels: int, filters: Sequence[int], negative_slope: float = 0.1, batch_norm: bool = True):
        super().__init__()
        f, levels = tuple(filters), len(filters) - 1
        self.encoder = nn.ModuleList([DoubleConv2d(in_channels, f[0], negative_slope, batch_norm)])
        self.encoder.extend(DoubleConv2d(f[i - 1], f[i], negative_slope, batch_norm) for i in range(1, levels + 1))
        self.up = nn.ModuleList(nn.ConvTranspose2d(f[i + 1], f[i], 2, stride=2) for i in range(levels))
        self.decoder = nn.ModuleList(DoubleConv2d(2 * f[i], f[i], None, batch_norm) for i in range(levels))
        self.out = nn.Conv2d(f[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` -> ``(B, 1, H, W)``; H and W multiples of ``2 ** levels``."""
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(F.max_pool2d(x, 2) if i > 0 else x)
            skips.append(x)
        x = skips.pop()
        for i in reversed(range(len(self.up))):
            x = self.decoder[i](torch.cat([skips[i], self.up[i](x)], dim=1))
        return self.out(x)


class ResidualDoseNet(nn.Module):
    """Li 2020's residual CNN: depth features, fold, 2D U-Net, plus the VDK slice (normalised units throughout)."""

    def __init__(self, config: DoseNetConfig = DoseNetConfig()):
        super().__init__()
        self.config = config
        self.depth = DepthFeatures(config.in_channels, config.depth_kernels, config.depth_channels, config.inplane_kernel,
                                   config.negative_slope, config.batch_norm)
        self.unet = UNet2d(config.depth_channels[-1] * config.folded_depth, config.filters, config.negative_slope,
                           config.batch_norm)
        self._initialise()
        # channels-last tensors: oneDNN's (CPU) and cuDNN's fast layouts (the 2D U-Net twice as fast on a CPU)
        self.depth.to(memory_format=torch.channels_last_3d)
        self.unet.to(memory_format=torch.channels_last)

    def _initialise(self) -> None:
        """Kaiming-normal weights (ReLU gain in the decoder, LeakyReLU elsewhere), zero biases, a zero last layer."""
        decoder = set(self.unet.decoder.modules()) | set(self.unet.up.modules())
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)):
                if m in decoder:
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                else:
                    nn.init.kaiming_normal_(m.weight, a=self.config.negative_slope, nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.zeros_(self.unet.out.weight)  # start from the VDK map: the correction is zero before training
        nn.init.zeros_(self.unet.out.bias)

    def _pad(self, x: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
        """Zero-pad the last two axes up to multiples of 2^levels; return the padded tensor and the original size."""
        h, w = x.shape[-2:]
        m = 2 ** self.config.levels
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        return x, h, w

    def correction(self, pack: torch.Tensor) -> torch.Tensor:
        """Packs ``(B, channels, slices, H, W)`` -> correction of each middle slice ``(B, 1, H, W)``."""
        c = self.config
        if pack.dim() != 5 or pack.shape[1] != c.in_channels or pack.shape[2] != c.slices:
            raise ValueError(f"expected packs (B, {c.in_channels}, {c.slices}, H, W), got {tuple(pack.shape)}")
        x, h, w = self._pad(pack)
        f = self.depth(x.contiguous(memory_format=torch.channels_last_3d))  # (B, C, folded_depth, H, W)
        folded = f.permute(0, 3, 4, 1, 2).reshape(f.shape[0], f.shape[3], f.shape[4], -1)  # channel = C index * depth + d
        return self.unet(folded.permute(0, 3, 1, 2))[..., :h, :w]

    def correction_slab(self, slab: torch.Tensor) -> torch.Tensor:
        """A slab ``(1, channels, n + slices - 1, H, W)`` of consecutive slices -> the corrections of its ``n`` middle
        slices ``(n, 1, H, W)``; equal to :meth:`correction` on the ``n`` packs, with the 3D convolutions done once."""
        c = self.config
        n = slab.shape[2] - c.slices + 1
        if slab.dim() != 5 or slab.shape[0] != 1 or slab.shape[1] != c.in_channels or n < 1:
            raise ValueError(f"expected a slab (1, {c.in_channels}, >= {c.slices}, H, W), got {tuple(slab.shape)}")
        x, h, w = self._pad(slab)
        f = self.depth(x.contiguous(memory_format=torch.channels_last_3d))  # (1, C, n + folded_depth - 1, H, W)
        f = f.unfold(2, c.folded_depth, 1)  # (1, C, n, H, W, folded_depth)
        folded = f.permute(0, 2, 3, 4, 1, 5).reshape(n, f.shape[3], f.shape[4], -1)  # as in correction()
        return self.unet(folded.permute(0, 3, 1, 2))[..., :h, :w]

    def forward(self, pack: torch.Tensor, vdk: torch.Tensor) -> torch.Tensor:
        """Raw normalised dose rate of the middle slices: ``vdk (B, 1, H, W)`` + correction (not clamped)."""
        return vdk + self.correction(pack)


def build_dose_network(config: DoseNetConfig = DoseNetConfig()) -> ResidualDoseNet:
    """A :class:`ResidualDoseNet` of this configuration, freshly initialised."""
    return ResidualDoseNet(config)


def physical_dose(raw: torch.Tensor, air: torch.Tensor) -> torch.Tensor:
    """The network's dose rate as users get it: at least zero, and zero in air voxels (``air`` bool)."""
    return raw.clamp(min=0.0).masked_fill(air, 0.0)


def fuse_batch_norm(model: nn.Module) -> nn.Module:
    """A copy for inference with every batch normalisation folded into the convolution before it: the same outputs
    in eval mode, one pass over the activations fewer per layer."""
    fused = copy.deepcopy(model).eval()
    for seq in fused.modules():
        if isinstance(seq, nn.Sequential):
            for i in range(len(seq) - 1):
                if isinstance(seq[i], (nn.Conv2d, nn.Conv3d)) and isinstance(seq[i + 1], (nn.BatchNorm2d, nn.BatchNorm3d)):
                    seq[i] = fuse_conv_bn_eval(seq[i], seq[i + 1])
                    seq[i + 1] = nn.Identity()
    return fused


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters of a torch module (trainable or not)."""
    return sum(p.numel() for p in model.parameters())
