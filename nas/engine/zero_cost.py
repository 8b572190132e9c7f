"""Zero-cost proxies: scores of an untrained network that stand in for its trained accuracy.

Each proxy takes a network at initialisation, one batch ``x`` [B, C, H, W] with
labels ``y`` [B], and returns one float (higher: predicted better). None changes
the network it scores (each works on a copy or under ``no_grad``), unless told
``keep=False`` for a network built only to be scored (which saves the copy).

- ``params``: the parameter count;
- ``synflow`` (Tanaka et al., NeurIPS 2020): ``sum |theta * dR/dtheta|`` with every
  parameter made positive and ``R`` the sum of the outputs for an all-ones input,
  in float64 and eval mode. Data-free: ``x`` gives only the input's shape;
- ``naswot`` (Mellor et al., ICML 2021): the log-determinant of the kernel of the
  ReLU activation codes of one batch, ``K[i, j]`` = units on which images ``i``
  and ``j`` agree;
- ``grad_norm`` and ``snip`` (Abdelfattah et al., ICLR 2021): ``sum ||dL/dtheta||``
  over the parameter tensors and ``sum |theta * dL/dtheta|``, L the cross-entropy
  of the batch.

``search.select=proxy_top`` ranks candidate cells by a data-free one
(``nas.engine.selection.proxy_top``); ``benchmarks/cell_judges.py`` measures how
well each ranks retrained cells (``docs/search_quality.md``).
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


def parameter_count(net: nn.Module, x: torch.Tensor, y: torch.Tensor, keep: bool = True) -> float:
    """Number of parameters."""
    return float(sum(p.numel() for p in net.parameters()))


def synflow(net: nn.Module, x: torch.Tensor, y: torch.Tensor, keep: bool = True) -> float:
    """``sum |theta * dR/dtheta|`` of a float64 copy with |theta|, ``R`` = sum of the outputs for ones (eval mode)."""
    net = (copy.deepcopy(net) if keep else net).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    out = net(torch.ones(1, *x.shape[1:], dtype=torch.float64))  # [1, classes]
    (out[0] if isinstance(out, tuple) else out).sum().backward()
    return float(sum((p.detach() * p.grad).abs().sum() for p in net.parameters() if p.grad is not None))


def naswot(net: nn.Module, x: torch.Tensor, y: torch.Tensor, keep: bool = True) -> float:
    """log det of ``K = C C^T + (1 - C)(1 - C)^T`` over the binary ReLU codes ``C`` [batch, units] of one batch."""
    kernel = torch.zeros(len(x), len(x), dtype=torch.float64)

    def record(module, inputs, output):
        codes = (output.detach().flatten(1) > 0).double()  # [batch, units of this ReLU]
        kernel.add_(codes @ codes.t() + (1 - codes) @ (1 - codes).t())

    hooks = [m.register_forward_hook(record) for m in net.modules() if isinstance(m, nn.ReLU)]
    try:
        net.train()
        with torch.no_grad():
            net(x)
    finally:
        for h in hooks:
            h.remove()
    return float(torch.linalg.slogdet(kernel)[1])


def _loss_gradients(net: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    keep: bool = True) -> list[tuple[torch.Tensor, torch.Tensor]]:
    net = (copy.deepcopy(net) if keep else net).train()
    out = net(x)
    F.cross_entropy(out[0] if isinstance(out, tuple) else out, y).backward()
    return [(p.detach(), p.grad) for p in net.parameters() if p.grad is not None]


def grad_norm(net: nn.Module, x: torch.Tensor, y: torch.Tensor, keep: bool = True) -> float:
    """``sum over parameter tensors of ||dL/dtheta||``, L the cross-entropy of one batch."""
    return float(sum(g.norm() for _, g in _loss_gradients(net, x, y, keep)))


def snip(net: nn.Module, x: torch.Tensor, y: torch.Tensor, keep: bool = True) -> float:
    """``sum |theta * dL/dtheta|``, L the cross-entropy of one batch."""
    return float(sum((p * g).abs().sum() for p, g in _loss_gradients(net, x, y, keep)))


ZERO_COST: dict[str, Callable[..., float]] = {  # (net, x, y, keep=True) -> score
    "params": parameter_count, "synflow": synflow, "naswot": naswot, "grad_norm": grad_norm, "snip": snip}
# Need no data, and are the same for every initialisation up to the weights' signs and scale: one init suffices.
DATA_FREE = ("params", "synflow")
