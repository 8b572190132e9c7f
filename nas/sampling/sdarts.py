"""SDARTS-RS random smoothing (Chen & Hsieh, ICML 2020), as the official code does it.

Before every weight step the softmax-normalised architecture weights get
uniform noise U(-eps, eps); each row is then clipped to [0, 1] (a row left all
zero gets 1 at its argmax) and renormalised to sum 1 (the official ``clip()``).
The weight step trains under these perturbed weights; the architecture step
never sees them. ``eps`` ramps linearly from 0.03 to its configured maximum
(0.3 published) over the epochs.
"""
from __future__ import annotations

import torch

EPSILON_START = 0.03  # the official ramp's starting value


def epsilon_at(epoch: int, epochs: int, epsilon: float) -> float:
    """The perturbation radius of an epoch: ``0.03 + (epsilon - 0.03) * epoch / epochs``; 0 when off.

    Args:
        epoch: Zero-based epoch.
        epochs: Total epochs of the search.
        epsilon: The configured maximum (``search.sdarts_epsilon``); 0 turns the perturbation off.
    """
    if not epsilon:
        return 0.0
    return EPSILON_START + (epsilon - EPSILON_START) * epoch / epochs


def clip_rows(weights: torch.Tensor) -> torch.Tensor:
    """SDARTS's ``clip()``: each row clamped to [0, 1], an all-zero row set to 1 at its argmax
    (taken before clamping), then divided by its sum. ``weights``: ``[num_edges, num_ops]``."""
    best = weights.argmax(dim=-1, keepdim=True)                     # [E, 1]
    clipped = weights.clamp(0.0, 1.0)                               # [E, K]
    empty = clipped.sum(-1, keepdim=True) == 0                      # [E, 1]
    clipped = torch.where(empty, torch.zeros_like(clipped).scatter_(-1, best, 1.0), clipped)
    return clipped / clipped.sum(-1, keepdim=True)


def perturb(probabilities: torch.Tensor, epsilon: float, generator: torch.Generator | None = None,
            allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Perturbed architecture weights ``[num_edges, num_ops]``, cut from the graph.

    Args:
        probabilities: ``softmax(logits)``, float32 ``[num_edges, num_ops]``.
        epsilon: Noise radius: every weight gets its own U(-epsilon, epsilon) draw.
        generator: Where the noise comes from (the sampler's generator, so a resumed
            run draws the same noise).
        allowed: bool ``[num_edges, num_ops]``, False where an op does not exist on an
            edge; such an op gets no noise and keeps weight 0.
    """
    probabilities = probabilities.detach()
    noise = (2 * torch.rand(probabilities.shape, generator=generator, device=probabilities.device) - 1) * epsilon
    noisy = probabilities + noise                                   # [E, K]
    if allowed is not None:  # never resurrect an op that does not exist on an edge
        noisy = noisy.masked_fill(~allowed, float("-inf"))
    return clip_rows(noisy)
