"""The CT-to-perfusion networks: the attention residual network (ARNN) of Ren 2021 IJROBP and a plain 3D U-Net.

This docstring is the *architecture* part of the model card. The reference is Ren 2021 IJROBP (DL-CTPM), section
"Proposed CNN architecture" and its Fig. 2; the ablations are Ren 2021 Front Oncol.

Input and output
    One pre-processed hemi-lung per sample: a float32 tensor ``(N, 1, D, H, W)`` = ``(N, 1, z, y, x)``, by default
    128 x 64 x 64 (the paper's crop size), values in [0, 1] after the CT enhancement. The networks are fully
    convolutional: any D, H, W divisible by ``2 ** (levels - 1)`` (8 by default) works; other sizes raise
    :class:`~ImagingBasics.errors.UserError`. Output: the same shape, values in (0, 1) after a sigmoid
    (the normalised perfusion). ``model.forward_logits(x)`` gives the values before the sigmoid, for training with
    ``BCEWithLogitsLoss`` (numerically stable and allowed under mixed precision, unlike BCE on probabilities).

What the paper states, and what we implement as stated
    * 3D encoder-decoder; three 2x2x2 stride-2 convolutions ("StriConv") go down from S1 (full size) to S4 (1/8);
      2x2x2 stride-2 transposed convolutions ("ConvT") go back up.
    * All other convolution kernels 5x5x5 (padding 2, so sizes are kept); ``kernel_size`` changes this.
    * At most 128 channels.
    * Residual blocks ("ResConv"); two skip-attention modules like Attention U-Net (Oktay et al. 2018);
      an ROI attention module; a final sigmoid to [0, 1].
    * Every convolution followed by BatchNorm, PReLU with initial slope 0.2 and dropout with rate 0.1.
    * Kaiming-uniform initialisation.

What the paper leaves open, and what we chose
    1. Channel widths: ``min(base_channels * 2 ** level, max_channels)`` = 16-32-64-128 at S1-S4 by default.
       With one ResConv per level this gives 7.6 M parameters (see "Size and speed" below).
    2. Number of residual blocks: one ResConv per encoder level (S1, S2, S3), one at the bottom (S4) and one per
       decoder level (S3, S2, S1): seven in all. The first (S1) takes the 1-channel input (3 with ``coordinates``).
    3. ResConv form (He et al. 2016): ``conv-BN-PReLU-Dropout -> conv-BN -> (+ shortcut) -> PReLU -> Dropout``.
       Both convolutions are still each followed by BN, PReLU and dropout, with the addition placed between the
       second BN and its PReLU, as in ResNet. The shortcut is the identity when the channel counts agree, else a
       1x1x1 convolution + BN (a linear projection, so no PReLU or dropout on it). ``residual=False`` gives plain
       ``(conv-BN-PReLU-Dropout) x 2`` blocks with no shortcut.
    4. StriConv and ConvT are convolutions too, so each is followed by BN, PReLU and dropout; StriConv doubles the
       channels (capped), ConvT halves them back.
    5. Dropout kind: element-wise ``nn.Dropout`` (the paper says "a dropout layer"; channel-wise ``Dropout3d``
       would drop one of the four ROI channels at a time and gives a coarser Monte-Carlo dropout spread).
    6. Skip connections: concatenation ``[skip, upsampled]`` followed by the decoder ResConv (2C -> C).
    7. Skip attention: on the two deepest skip connections, i.e. the S3 and S2 skips (the S1 skip is a plain
       concatenation). Gate (Oktay's additive attention): ``alpha = sigmoid(psi(ReLU(W_x x + up(W_g g))))``,
       ``skip' = x * alpha``, where x is the encoder skip, g the decoder feature of the next coarser level
       (before its ConvT) as gating signal, W_x, W_g and psi 1x1x1 convolutions to ``max(C_x // 2, 1)``, resp. 1,
       channels, and ``up`` trilinear upsampling of ``W_g g`` to the skip's size. The gate's 1x1x1 convolutions
       are the gate's own linear maps: no BN/PReLU/dropout on them (ReLU and sigmoid belong to the gate).
       ``skip_attention=False`` gives plain concatenation skips everywhere. With ``levels`` other than 4 the gates
       sit on the ``min(2, levels - 1)`` deepest skips.
    8. ROI attention (Fig. 2c), placed at the end of the decoder (S1, full size), before the output head.
       Implemented literally: ``f = PReLU(BN(conv5(x)))`` (+ dropout) with 4 channels; ``m = 1[f > 0]`` (binary,
       drop threshold 0); ``out = f * sigmoid(m)`` element-wise. Trainability: the threshold has zero gradient
       almost everywhere, but no gradient through the mask is needed: ``sigmoid(m)`` is 0.5 or 0.731, so the module
       is a fixed piecewise-linear map ``f -> f * (0.5 or 0.731)`` and gradients reach the convolution through the
       multiplicand ``f`` (slope 0.5 / 0.731). We do not add a straight-through estimator or a learned soft mask:
       either would be a module the paper does not describe. Read literally, the ROI attention therefore amplifies
       voxels with positive features by 1.46 relative to the others; that is what we reproduce.
       ``roi_attention=False`` removes the whole module (the head then reads the S1 decoder features directly).
    9. Output head: a 1x1x1 convolution (4 -> ``out_channels``, or C1 -> ``out_channels`` without ROI attention)
       with bias, then the sigmoid ("a sigmoid function sums the results of the previous layers"). It is the one
       convolution not followed by BN/PReLU/dropout, which would distort the [0, 1] output.
   10. Initialisation: ``kaiming_uniform_(a=prelu_init, nonlinearity="leaky_relu", mode="fan_in")`` for every
       convolution and transposed convolution weight (bound ``sqrt(6 / ((1 + a^2) fan_in))``), zeros for all
       biases, BN weight 1 / bias 0, PReLU slopes ``prelu_init``. One PReLU parameter per channel.
   11. Convolutions followed by BN have no bias (BN's shift replaces it).

Position channels (``coordinates=True``; not in the papers, off by default so that older weights load unchanged)
    The first block also reads two channels that :func:`position_channels` appends to the input inside the network:
    the voxel's cranio-caudal (z) and anterior-posterior (y) position across the sample, -1 at the first row to +1
    at the last (CoordConv, Liu et al. 2018). A hemi-lung sample is the lung's bounding box in patient
    space (LPS, :mod:`.preprocess`), so these are the voxel's height in the supine lung and its place from apex to
    base. Why: supine perfusion rises from the non-dependent to the dependent lung whatever the lung's density
    (the zones of West et al. 1964), but the network's only input, the histogram-equalised CT, carries
    position only through the zero padding at the sample's border, and a network trained on it learned to read the
    gradient off the CT's dependent density instead (``bench/gravity_cue.py``: no gradient on an emphysematous CT
    whose dependent lung is not denser). The channels assume a supine patient, as the papers' MAA SPECTs do.

Plain 3D U-Net baseline (``arch="unet"``; the comparison in the ablation study)
    Cicek-style: per level ``(conv3-BN-ReLU-Dropout) x 2``; 2x2x2 max-pooling down; 2x2x2 stride-2 transposed
    convolution (with bias, no BN) up; concatenation skips; the same number of levels and the same channel rule
    as the ARNN; 1x1x1 head + sigmoid. Kernel 3x3x3 always (``kernel_size`` applies to the ARNN only). It keeps the
    configured dropout so both networks are regularised alike and Monte-Carlo dropout works on both; set
    ``dropout=0`` for the textbook U-Net. Kaiming-uniform init with ``a=0`` (ReLU). The comparison U-Net of the
    timing below is ``NetworkConfig(arch="unet", base_channels=32, max_channels=256)``.

Size and speed (one 1x1x128x64x64 forward pass in eval mode; parameter counts checked by Testing/test_network.py)
    Default ARNN: 7,627,971 parameters; 2.5-3.4 s on 2 CPU threads (torch 2.13, on a shared machine with load
    average 3-4; an unloaded prototype took 1.0-1.2 s); on an H100 (torch 2.11) two lungs in one batch
    take 25-30 ms including transfers, with or without autocast. Without residual blocks 7,616,947, without ROI
    attention 7,619,971, without skip attention 7,620,193 parameters.
    U-Net 16-128: 1,401,265 parameters; U-Net 32-256: 5,601,121 parameters.

Module layout: the building blocks (:class:`ConvUnit`, :class:`UpUnit`, :class:`ResConv`, :class:`PlainConv`,
:class:`SkipAttention`, :class:`ROIAttention`, :class:`DoubleConv`) take every option as a constructor argument; the two
networks (:class:`ARNN`, :class:`UNet3D`) read theirs from a :class:`NetworkConfig`. The sub-module names are the
state-dict keys of the weight files (:mod:`.weights`): renaming an attribute breaks the bundled weights.

This module imports torch. The Slicer module, its batch script and ``ctpm --help`` do not import it at load time
(Testing/test_slicer_contract.py checks which modules may).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ImagingBasics.errors import UserError

ARCHITECTURES = ("arnn", "unet")

#: Channels of the ROI attention feature map (Ren 2021 IJROBP: "increase the number of feature channels to four").
ROI_CHANNELS = 4
#: Number of skip connections (the deepest ones) that get an attention gate (Ren et al. 2021: "two").
N_SKIP_GATES = 2
#: Position channels appended with ``coordinates=True``: cranio-caudal (z) and anterior-posterior (y).
N_POSITION_CHANNELS = 2


@dataclass(frozen=True)
class NetworkConfig:
    """Hyper-parameters of a network; stored with its weights. Shapes are (z, y, x) voxels.

    ``levels`` counts resolutions S1..S4 (so ``levels - 1`` down-samplings); ``kernel_size`` is the ARNN's
    convolution size (odd); ``dropout`` is a probability; ``prelu_init`` the initial PReLU slope and the Kaiming ``a``;
    ``coordinates`` appends the two position channels of :func:`position_channels` to the ``in_channels`` input.
    """

    arch: str = "arnn"
    in_channels: int = 1
    out_channels: int = 1
    base_channels: int = 16
    max_channels: int = 128
    kernel_size: int = 5
    levels: int = 4
    residual: bool = True
    roi_attention: bool = True
    skip_attention: bool = True
    dropout: float = 0.1
    prelu_init: float = 0.2
    input_shape: Tuple[int, int, int] = (128, 64, 64)
    coordinates: bool = False

    def __post_init__(self) -> None:
        """Normalise ``input_shape`` to a tuple of ints and check every value; raises UserError."""
        try:
            object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        except (TypeError, ValueError):
            raise UserError(f"network setting input_shape must be three sizes (z, y, x), got {self.input_shape!r}") from None
        if self.arch not in ARCHITECTURES:
            raise UserError(f"unknown network architecture {self.arch!r}; use one of {', '.join(ARCHITECTURES)}")
        for name in ("in_channels", "out_channels", "base_channels", "max_channels", "kernel_size", "levels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"network setting {name} must be a positive integer, got {value!r}")
        if self.kernel_size % 2 == 0:
            raise UserError(f"network setting kernel_size must be odd, got {self.kernel_size}")
        if self.levels < 2:
            raise UserError(f"network setting levels must be at least 2, got {self.levels}")
        for name in ("residual", "roi_attention", "skip_attention", "coordinates"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"network setting {name} must be true or false, got {getattr(self, name)!r}")
        for name in ("dropout", "prelu_init"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), (int, float)):
                raise UserError(f"network setting {name} must be a number, got {getattr(self, name)!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"network setting dropout must be in [0, 1), got {self.dropout!r}")
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise UserError(f"network setting input_shape must be three positive sizes (z, y, x), got {self.input_shape}")
        check_spatial_shape(self, self.input_shape)

    @property
    def first_block_channels(self) -> int:
        """Channels the first block reads: the input's, plus the two position channels with ``coordinates``."""
        return self.in_channels + (N_POSITION_CHANNELS if self.coordinates else 0)

    @property
    def channels(self) -> Tuple[int, ...]:
        """Feature channels at S1, S2, ...: ``min(base * 2 ** level, max)``, e.g. (16, 32, 64, 128)."""
        return tuple(min(self.base_channels * 2**level, self.max_channels) for level in range(self.levels))

    def to_dict(self) -> Dict[str, Any]:
        """Plain-type dict (input_shape as a list) for JSON and for ``torch.load(weights_only=True)``."""
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> NetworkConfig:
        """Inverse of :meth:`to_dict`; missing keys take defaults, unknown keys raise UserError."""
        if not isinstance(d, dict):
            raise UserError(f"network configuration must be a dictionary, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"unknown network setting(s): {', '.join(map(str, unknown))}; known: {', '.join(sorted(known))}")
        return cls(**d)


def check_spatial_shape(config: NetworkConfig, shape: Tuple[int, ...]) -> None:
    """Raise UserError unless every spatial size (z, y, x voxels) is divisible by ``2 ** (levels - 1)``."""
    factor = 2 ** (config.levels - 1)
    if any(int(s) % factor for s in shape):
        raise UserError(
            f"image size {tuple(int(s) for s in shape)} (z, y, x) is not divisible by {factor} in every axis, "
            f"which this {config.levels}-level network needs; resample the lung to e.g. 128x64x64"
        )


def position_channels(x: torch.Tensor) -> torch.Tensor:
    """(N, 2, D, H, W): each voxel's z and y position across the sample, -1 at the first row to +1 at the last
    (voxel centres; 0 for a size of 1), dtype and device of ``x`` (N, C, D, H, W).

    CoordConv (Liu et al. 2018); see "Position channels" in the module docstring."""
    n, _, d, h, w = x.shape
    z = torch.linspace(-1.0, 1.0, d, device=x.device, dtype=x.dtype) if d > 1 else x.new_zeros(1)
    y = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype) if h > 1 else x.new_zeros(1)
    zz = z.view(1, 1, d, 1, 1).expand(n, 1, d, h, w)
    yy = y.view(1, 1, 1, h, 1).expand(n, 1, d, h, w)
    return torch.cat([zz, yy], dim=1)


def with_position(config: NetworkConfig, x: torch.Tensor) -> torch.Tensor:
    """``x`` with the position channels appended when ``config.coordinates``, else ``x`` itself."""
    return torch.cat([x, position_channels(x)], dim=1) if config.coordinates else x


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable, by default) scalar parameters of a torch module."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))


def kaiming_bound(fan_in: int, a: float) -> float:
    """The Kaiming-uniform bound ``sqrt(6 / ((1 + a^2) fan_in))`` (leaky-ReLU gain, fan-in mode)."""
    return (6.0 / ((1.0 + a * a) * fan_in)) ** 0.5


def init_weights(model: nn.Module, a: float) -> None:
    """Kaiming-uniform (negative slope ``a``) for every (transposed) 3D convolution weight, zeros for biases."""
    for m in model.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_uniform_(m.weight, a=a, mode="fan_in", nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------------------------- ARNN blocks


class ConvUnit(nn.Sequential):
    """conv(k, stride) -> BN -> PReLU -> Dropout: the ARNN's basic unit (choices 4 and 11 of the module docstring).

    ``stride`` 1 keeps the size (padding ``kernel_size // 2``); ``stride`` 2 with ``kernel_size`` 2 is the paper's
    StriConv (no padding, halves D, H, W). ``prelu_init`` is the initial PReLU slope (one per channel), ``dropout``
    the element-wise dropout probability.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dropout: float, prelu_init: float,
                 stride: int = 1):
        padding = kernel_size // 2 if stride == 1 else 0
        super().__init__(
            nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.PReLU(out_channels, init=prelu_init),
            nn.Dropout(dropout),
        )


class UpUnit(nn.Sequential):
    """ConvT 2x2x2 stride 2 -> BN -> PReLU -> Dropout: the paper's ConvT, doubles D, H, W (choice 4)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float, prelu_init: float):
        super().__init__(
            nn.ConvTranspose3d(in_channels, out_channels, 2, stride=2, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.PReLU(out_channels, init=prelu_init),
            nn.Dropout(dropout),
        )


class ResConv(nn.Module):
    """The paper's ResConv (choice 3, He et al. 2016): conv-BN-PReLU-Drop, conv-BN, + shortcut, PReLU, Drop.

    The shortcut is the identity when ``in_channels == out_channels``, else a 1x1x1 convolution + BN.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dropout: float, prelu_init: float):
        super().__init__()
        self.unit1 = ConvUnit(in_channels, out_channels, kernel_size, dropout, prelu_init)
        self.conv2 = nn.Conv3d(out_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn2 = nn.BatchNorm3d(out_channels)
        self.shortcut = nn.Identity() if in_channels == out_channels else nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 1, bias=False), nn.BatchNorm3d(out_channels))
        self.act = nn.PReLU(out_channels, init=prelu_init)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.unit1(x)))
        return self.drop(self.act(y + self.shortcut(x)))


class PlainConv(nn.Sequential):
    """The ``residual=False`` ablation of :class:`ResConv` (Ren 2021 Front Oncol): (conv-BN-PReLU-Drop) x 2."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dropout: float, prelu_init: float):
        super().__init__(ConvUnit(in_channels, out_channels, kernel_size, dropout, prelu_init),
                         ConvUnit(out_channels, out_channels, kernel_size, dropout, prelu_init))


class SkipAttention(nn.Module):
    """Additive attention gate (Oktay et al. 2018; choice 7): ``x * sigmoid(psi(ReLU(W_x x + up(W_g g))))``.

    ``x`` is the encoder skip (``skip_channels``), ``g`` the decoder feature one level coarser (``gate_channels``);
    ``up`` is trilinear upsampling to the skip's size. ``intermediate_channels`` defaults to ``max(skip_channels // 2, 1)``.
    """

    def __init__(self, skip_channels: int, gate_channels: int, intermediate_channels: Optional[int] = None):
        super().__init__()
        c_int = max(skip_channels // 2, 1) if intermediate_channels is None else intermediate_channels
        self.w_x = nn.Conv3d(skip_channels, c_int, 1, bias=False)
        self.w_g = nn.Conv3d(gate_channels, c_int, 1, bias=True)
        self.psi = nn.Conv3d(c_int, 1, 1, bias=True)

    def coefficients(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Attention coefficients in (0, 1), shape (N, 1, *x.shape[2:])."""
        gate = F.interpolate(self.w_g(g), size=x.shape[2:], mode="trilinear", align_corners=False)
        return torch.sigmoid(self.psi(F.relu(self.w_x(x) + gate)))

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x * self.coefficients(x, g)


class ROIAttention(nn.Module):
    """ROI attention of Ren 2021 IJROBP Fig. 2c, literally (choice 8): f = conv unit; m = 1[f > 0]; out = f * sigmoid(m).

    ``roi_channels`` feature channels (the paper's "four").
    """

    def __init__(self, in_channels: int, kernel_size: int, dropout: float, prelu_init: float,
                 roi_channels: int = ROI_CHANNELS):
        super().__init__()
        self.conv = ConvUnit(in_channels, roi_channels, kernel_size, dropout, prelu_init)

    def features_and_mask(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The feature map f and its binary mask (1 where f > 0, else 0), same shape and dtype."""
        f = self.conv(x)
        return f, (f > 0).to(f.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f, mask = self.features_and_mask(x)
        return f * torch.sigmoid(mask)


# ---------------------------------------------------------------------------------------------------- networks


class ARNN(nn.Module):
    """Attention residual network (Ren 2021 IJROBP Fig. 2); see the module docstring for every choice."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.config, self.levels = config, config.levels
        ch, k, p, s = config.channels, config.kernel_size, config.dropout, config.prelu_init
        block = ResConv if config.residual else PlainConv
        last = config.levels - 1
        self.enc = nn.ModuleList([block(config.first_block_channels if i == 0 else ch[i], ch[i], k, p, s)
                                  for i in range(last)])
        self.down = nn.ModuleList([ConvUnit(ch[i], ch[i + 1], 2, p, s, stride=2) for i in range(last)])
        self.bottom = block(ch[last], ch[last], k, p, s)
        self.up = nn.ModuleList([UpUnit(ch[i + 1], ch[i], p, s) for i in range(last)])
        gated = range(max(last - N_SKIP_GATES, 0), last) if config.skip_attention else ()
        self.gates = nn.ModuleDict({str(i): SkipAttention(ch[i], ch[i + 1]) for i in gated})
        self.dec = nn.ModuleList([block(2 * ch[i], ch[i], k, p, s) for i in range(last)])
        self.roi = ROIAttention(ch[0], k, p, s) if config.roi_attention else None
        self.head = nn.Conv3d(ROI_CHANNELS if config.roi_attention else ch[0], config.out_channels, 1)
        init_weights(self, config.prelu_init)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, D, H, W) -> (N, C_out, D, H, W) values before the final sigmoid."""
        check_spatial_shape(self.config, x.shape[2:])
        x = with_position(self.config, x)
        skips = []
        for enc, down in zip(self.enc, self.down):
            x = enc(x)
            skips.append(x)
            x = down(x)
        x = self.bottom(x)
        for i in reversed(range(self.levels - 1)):
            skip = skips[i]
            if str(i) in self.gates:
                skip = self.gates[str(i)](skip, x)
            x = self.dec[i](torch.cat([skip, self.up[i](x)], dim=1))
        if self.roi is not None:
            x = self.roi(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, D, H, W) -> (N, C_out, D, H, W) in (0, 1)."""
        return torch.sigmoid(self.forward_logits(x))


class DoubleConv(nn.Sequential):
    """U-Net block (Cicek et al. 2016): (conv-BN-ReLU-Dropout) x 2, size kept (padding ``kernel_size // 2``)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float, kernel_size: int = 3):
        pad = kernel_size // 2
        super().__init__(
            nn.Conv3d(in_channels, out_channels, kernel_size, padding=pad, bias=False), nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Conv3d(out_channels, out_channels, kernel_size, padding=pad, bias=False), nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True), nn.Dropout(dropout),
        )


class UNet3D(nn.Module):
    """Plain 3D U-Net baseline: max-pool down, ConvT up, concatenation skips, sigmoid output (module docstring)."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.config, self.levels = config, config.levels
        ch, p, last = config.channels, config.dropout, config.levels - 1
        self.enc = nn.ModuleList([DoubleConv(config.first_block_channels if i == 0 else ch[i - 1], ch[i], p)
                                  for i in range(last)])
        self.pool = nn.MaxPool3d(2)
        self.bottom = DoubleConv(ch[last - 1], ch[last], p)
        self.up = nn.ModuleList([nn.ConvTranspose3d(ch[i + 1], ch[i], 2, stride=2) for i in range(last)])
        self.dec = nn.ModuleList([DoubleConv(2 * ch[i], ch[i], p) for i in range(last)])
        self.head = nn.Conv3d(ch[0], config.out_channels, 1)
        init_weights(self, 0.0)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, D, H, W) -> (N, C_out, D, H, W) values before the final sigmoid."""
        check_spatial_shape(self.config, x.shape[2:])
        x = with_position(self.config, x)
        skips = []
        for enc in self.enc:
            x = enc(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for i in reversed(range(self.levels - 1)):
            x = self.dec[i](torch.cat([skips[i], self.up[i](x)], dim=1))
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, D, H, W) -> (N, C_out, D, H, W) in (0, 1)."""
        return torch.sigmoid(self.forward_logits(x))


def build_model(config: NetworkConfig) -> Union[ARNN, UNet3D]:
    """Build the network described by ``config`` (initialised, train mode); ``model.config`` holds the config."""
    if not isinstance(config, NetworkConfig):
        raise TypeError(f"build_model needs a NetworkConfig, got {type(config).__name__}")
    return ARNN(config) if config.arch == "arnn" else UNet3D(config)
