"""Building-block ops shared by the cell spaces (NAS-Bench-201 and DARTS definitions).

Each op maps ``[B, C_in, H, W]`` to ``[B, C_out, H / stride, W / stride]``.
``affine`` and ``track_running_stats`` are passed to every BatchNorm so that a
search supernet can use BN without learnable affine and without running
statistics, as GDAS and NAS-Bench-201 do.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .frozen_relu_conv import run_sequential
from .gates import StraightThroughBatchNorm2d
from .op_traits import PARAMETER_FREE, LEARNED, ZERO


def add_all(tensors) -> torch.Tensor:
    """Sums an iterable of tensors starting from the first (``sum()`` would start with ``0 + t``,
    an extra full-size addition per node, about 8% of an NB201 step on the CPU)."""
    it = iter(tensors)
    total = next(it)
    for t in it:
        total = total + t
    return total


class Zero(nn.Module):
    """The ``none`` op: zeros of the output shape, computed without touching the input's values."""

    op_traits = ZERO

    def __init__(self, C_in: int, C_out: int, stride: int):
        super().__init__()
        self.C_out, self.stride = C_out, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        s = self.stride
        return x.new_zeros(B, self.C_out, (H + s - 1) // s, (W + s - 1) // s)


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv -> BN. As NAS-Bench-201, the conv has a bias exactly when BN has no affine.

    Ops whose output is a BN's output end in a ``StraightThroughBatchNorm2d`` (a plain
    BN unless a GDAS arch step gates it) and name it ``final_norm``.
    """

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int,
                 dilation: int = 1, affine: bool = True, track_running_stats: bool = True,
                 conv_bias: bool | None = None):
        bias = (not affine) if conv_bias is None else conv_bias
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=bias),
            StraightThroughBatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_sequential(self, x)

    @property
    def final_norm(self) -> nn.Module:
        return self[-1]


class FactorizedReduce(nn.Module):
    """Halves the resolution with two offset 1x1 stride-2 convs, concatenated (DARTS)."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even C_out, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = StraightThroughBatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        # [B, C_in, H, W] -> 2 x [B, C_out/2, H/2, W/2]; the second path is shifted by one pixel.
        y = torch.cat([self.conv_1(x), self.conv_2(nn.functional.pad(x[:, :, 1:, 1:], (0, 1, 0, 1)))], dim=1)
        return self.bn(y)

    @property
    def final_norm(self) -> nn.Module:
        return self.bn


class Pooling(nn.Module):
    """3x3 average or max pooling, preceded by a 1x1 ReLUConvBN when the width changes (NB201)."""

    def __init__(self, C_in: int, C_out: int, stride: int, mode: str = "avg", affine: bool = True,
                 track_running_stats: bool = True):
        super().__init__()
        self.preprocess = None if C_in == C_out else ReLUConvBN(
            C_in, C_out, 1, 1, 0, affine=affine, track_running_stats=track_running_stats)
        if mode == "avg":
            self.pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
        elif mode == "max":
            self.pool = nn.MaxPool2d(3, stride=stride, padding=1)
        else:
            raise ValueError(f"pooling mode must be 'avg' or 'max', got {mode!r}")
        # Parameter-free unless the width changes (then its 1x1 conv learns).
        self.op_traits = PARAMETER_FREE if self.preprocess is None else LEARNED

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x if self.preprocess is None else self.preprocess(x))


class PoolBN(nn.Sequential):
    """A pool followed by a BN (DARTS's search MixedOp: it puts pools on the scale of the BN'd convs)."""

    def __init__(self, pool: nn.Module, norm: nn.Module):
        super().__init__(pool, norm)

    @property
    def final_norm(self) -> nn.Module:
        return self[-1]


class ResNetBasicBlock(nn.Module):
    """NAS-Bench-201's residual reduction block: two 3x3 ReLUConvBN, avg-pool + 1x1 conv shortcut."""

    def __init__(self, C_in: int, C_out: int, stride: int, affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, stride, 1, affine=affine, track_running_stats=track_running_stats)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, affine=affine, track_running_stats=track_running_stats)
        if stride == 2:
            self.downsample = nn.Sequential(nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
                                            nn.Conv2d(C_in, C_out, 1, 1, 0, bias=False))
        elif C_in != C_out:
            self.downsample = ReLUConvBN(C_in, C_out, 1, 1, 0, affine=affine, track_running_stats=track_running_stats)
        else:
            self.downsample = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return residual + self.conv_b(self.conv_a(x))


class SequentialOp(nn.Module):
    """An op that is one Sequential, ``self.op``, whose last module is its output BN."""

    op: nn.Sequential

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_sequential(self.op, x)

    @property
    def final_norm(self) -> nn.Module:
        return self.op[-1]


class SepConv(SequentialOp):
    """DARTS's separable conv: (ReLU, depthwise k x k, pointwise 1x1, BN) twice; only the first strides.

    Args:
        C_in, C_out: Input and output widths (the first block keeps ``C_in``).
        kernel_size, stride, padding: Of the depthwise convs.
        affine, track_running_stats: Passed to both BNs.
    """

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int,
                 affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, 1, bias=False),
            nn.BatchNorm2d(C_in, affine=affine, track_running_stats=track_running_stats),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=1, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            StraightThroughBatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats),
        )


class DilConv(SequentialOp):
    """DARTS's dilated separable conv: ReLU, dilated depthwise k x k, pointwise 1x1, BN.

    Args:
        C_in, C_out: Input and output widths.
        kernel_size, stride, padding, dilation: Of the depthwise conv.
        affine, track_running_stats: Passed to the BN.
    """

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, dilation: int,
                 affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, dilation=dilation,
                      groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            StraightThroughBatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats),
        )
