"""The official GDAS NAS-Bench-201 code (``xautodl``), built and stepped like its search script.

Shared by ``step_time.py`` (timing) and ``official_comparison.py`` (search
quality). The model is ``TinyNetworkGDAS`` of ``xautodl==1.0.0`` and one
iteration is the body of ``search_func`` in
``exps/NAS-Bench-201-algos/GDAS.py`` of D-X-Y/AutoDL-Projects:

    w_optimizer.zero_grad(); CE(network(base_inputs)).backward()
    clip_grad_norm_(network.parameters(), 5); w_optimizer.step()
    a_optimizer.zero_grad(); CE(network(arch_inputs)).backward(); a_optimizer.step()

``xautodl`` is optional: ``import_official`` returns None without it.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

INSTALL_HINT = "pip install --no-deps xautodl==1.0.0"
# The official op order of its "nas-bench-201" search space (its logit columns).
OFFICIAL_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# Its edges in logit row order: sorted "i<-j" keys of NAS201SearchCell.
OFFICIAL_EDGES = ("1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2")


def import_official():
    """``(TinyNetworkGDAS, get_search_spaces)`` from xautodl, or None when it is not installed."""
    try:
        from xautodl.models import get_search_spaces
        from xautodl.models.cell_searchs import TinyNetworkGDAS
    except ImportError:
        return None
    return TinyNetworkGDAS, get_search_spaces


def build_official(C: int, N: int, num_classes: int, in_channels: int = 3, cell_bn_track: bool = False,
                   macro_bn_track: bool = True) -> nn.Module:
    """The official GDAS NAS-Bench-201 supernet.

    Args:
        C, N, num_classes: As ``TinyNetworkGDAS``.
        in_channels: Image channels. The official stem is hard-wired to 3; any
            other count replaces its first conv by the same conv with that many
            inputs (PyTorch's default init, as the official one).
        cell_bn_track: ``track_running_stats`` of the cells' BNs (the search
            script's ``--track_running_stats``; its NAS-Bench-201 runs use 0).
            Their ``affine`` is always False, as in the script.
        macro_bn_track: ``track_running_stats`` of the stem, reduction blocks
            and head BNs (official: True, PyTorch's default). False rebuilds
            them with batch statistics only, as this project's supernet.

    Raises:
        ImportError: without xautodl.
    """
    found = import_official()
    if found is None:
        raise ImportError(f"xautodl is not installed ({INSTALL_HINT})")
    TinyNetworkGDAS, get_search_spaces = found
    space = get_search_spaces("cell", "nas-bench-201")
    assert tuple(space) == OFFICIAL_OPS, f"unexpected official op order {space}"
    net = TinyNetworkGDAS(C=C, N=N, max_nodes=4, num_classes=num_classes, search_space=space, affine=False,
                          track_running_stats=cell_bn_track)
    assert tuple(sorted(net.edge2index, key=net.edge2index.get)) == OFFICIAL_EDGES
    if in_channels != 3:
        net.stem[0] = nn.Conv2d(in_channels, C, kernel_size=3, padding=1, bias=False)
    if not macro_bn_track:
        _untrack_macro_bns(net)
    return net


def _untrack_macro_bns(net: nn.Module) -> None:
    """Rebuilds every BN outside the search cells without running statistics (same affine, same init)."""
    cells = [m for m in net.cells if hasattr(m, "forward_gdas")]
    in_cells = {id(bn) for cell in cells for bn in cell.modules() if isinstance(bn, nn.BatchNorm2d)}
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d) and id(child) not in in_cells:
                new = nn.BatchNorm2d(child.num_features, eps=child.eps, momentum=child.momentum,
                                     affine=child.affine, track_running_stats=False)
                if child.affine:
                    new.load_state_dict({"weight": child.weight.data, "bias": child.bias.data})
                setattr(parent, name, new)


def official_optimizers(net: nn.Module, s):
    """The script's optimizers with the values of a ``SearchConfig``: SGD on ``get_weights()``, Adam on the logits."""
    w_opt = torch.optim.SGD(net.get_weights(), lr=s.lr, momentum=s.momentum, nesterov=s.nesterov,
                            weight_decay=s.weight_decay)
    a_opt = torch.optim.Adam(net.get_alphas(), lr=s.arch_lr, betas=tuple(s.arch_betas),
                             weight_decay=s.arch_weight_decay)
    return w_opt, a_opt


def official_lr(epoch: int, epochs: int, lr: float, lr_min: float) -> float:
    """The script's weight learning rate in ``epoch`` (xautodl ``CosineAnnealingLR``, no warm-up, T_max = epochs).

    Its per-step ``update(None, step / len)`` changes only the warm-up, so the
    rate is constant within an epoch.
    """
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def official_tau(epoch: int, epochs: int, tau_max: float, tau_min: float) -> float:
    """The script's temperature: ``tau_max - (tau_max - tau_min) * epoch / (total_epoch - 1)``.

    A one-epoch run (which the script divides by zero on) gets ``tau_min``.
    """
    return tau_max - (tau_max - tau_min) * (epoch / (epochs - 1) if epochs > 1 else 1.0)


def official_step(net: nn.Module, w_opt, a_opt, x, y, xv, yv, clip: float = 5.0, clip_arch: bool = True,
                  mark=lambda: None) -> dict:
    """One ``search_func`` iteration: weight step on (x, y), then arch step on (xv, yv).

    Args:
        clip: The weight step's max gradient norm (the script: 5).
        clip_arch: True (the script) clips ``network.parameters()``, whose
            gradients then include the logits' (what the weight step's backward
            left on them, plus the previous arch step's, which nothing cleared);
            False clips the weights only, as this project does.
        mark: Called at the start, between the steps and at the end (timing).

    Returns:
        Tensors (no host sync): ``loss``, ``correct``, ``arch_loss``,
        ``arch_correct``, ``clip_norm`` (the total norm the clip saw) and
        ``weight_norm`` (the weights' gradient norm alone).
    """
    mark()
    w_opt.zero_grad()
    _, logits = net(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    weights = net.get_weights()
    # The weights' own gradient norm, measured before the clip (for the record; no sync).
    weight_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in weights
                                                        if p.grad is not None]))
    norm = nn.utils.clip_grad_norm_(list(net.parameters()) if clip_arch else weights, clip)
    w_opt.step()
    correct = (logits.detach().argmax(1) == y).sum()
    mark()
    a_opt.zero_grad()
    _, logits_v = net(xv)
    arch_loss = F.cross_entropy(logits_v, yv)
    arch_loss.backward()
    a_opt.step()
    mark()
    return {"loss": loss.detach(), "correct": correct, "arch_loss": arch_loss.detach(),
            "arch_correct": (logits_v.detach().argmax(1) == yv).sum(), "clip_norm": norm.detach(),
            "weight_norm": weight_norm.detach()}
