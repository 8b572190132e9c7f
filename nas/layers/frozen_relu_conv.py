"""ReLU -> conv with frozen weights, keeping one byte per element for the backward pass.

In a search's arch step the weights get no gradient, yet autograd keeps every
ReLU's output (4 bytes per element: ReLU's backward reads it, and the conv saves
it as its input). With the conv frozen the input gradient needs only the conv's
weight and ReLU's sign, so ``run_sequential`` runs each ReLU -> Conv2d pair of an
op as one autograd node that keeps the sign as uint8. This more than pays for
what the straight-through gradient of a skip edge keeps (its source node), so
a GDAS arch step saves about what training the sampled network saves.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class _FrozenReLUConv(torch.autograd.Function):
    """``conv(relu(x))`` for a conv whose weights need no gradient (a search's arch step).

    Autograd would keep ``relu(x)`` (4 bytes per element, for ReLU's backward and
    as the conv's saved input); with the weights frozen the backward pass needs
    only ReLU's sign, kept as one byte per element, and the conv's weight.
    """

    @staticmethod
    def forward(ctx, x, weight, conv):
        ctx.conv, ctx.input_shape = conv, x.shape
        # uint8, not bool: on the CPU uint8 -> float is a vectorised copy and bool ops with floats are not.
        ctx.save_for_backward((x > 0).view(torch.uint8), weight)
        return conv(torch.relu(x))  # [B, C_in, H, W] -> [B, C_out, H', W']

    @staticmethod
    def backward(ctx, g):
        positive, weight = ctx.saved_tensors
        conv = ctx.conv
        # The input gradient of a conv is the transposed conv of the output gradient; output_padding
        # restores the rows and columns a strided conv dropped.
        extra = [size - ((out - 1) * st - 2 * pad + dil * (k - 1) + 1) for size, out, st, pad, dil, k in zip(
            ctx.input_shape[2:], g.shape[2:], conv.stride, conv.padding, conv.dilation, conv.kernel_size)]
        grad = F.conv_transpose2d(g, weight, None, conv.stride, conv.padding, extra, conv.groups, conv.dilation)
        return grad.mul_(positive.to(grad.dtype)), None, None


def _frozen_conv(module: nn.Module) -> bool:
    """A plain zero-padded Conv2d none of whose parameters (weight, bias) needs a gradient: the node
    returns no parameter gradients, so a trainable bias beside a frozen weight takes the plain path."""
    return (type(module) is nn.Conv2d and not module.weight.requires_grad
            and (module.bias is None or not module.bias.requires_grad)
            and module.padding_mode == "zeros" and not isinstance(module.padding, str))


def run_sequential(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Runs ``seq``; each ReLU -> Conv2d pair whose conv is frozen (weight and bias) and whose input
    needs a gradient runs as one node that keeps a one-byte mask (see ``_FrozenReLUConv``).
    Same values and gradients."""
    modules = list(seq)
    fuse = torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type)
    k = 0
    while k < len(modules):
        module = modules[k]
        if (fuse and type(module) is nn.ReLU and k + 1 < len(modules) and _frozen_conv(modules[k + 1])
                and x.requires_grad):
            x = _FrozenReLUConv.apply(x, modules[k + 1].weight, modules[k + 1])
            k += 2
        else:
            x = module(x)
            k += 1
    return x
