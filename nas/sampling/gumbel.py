"""Gumbel noise, the Gumbel-softmax sample, and temperature schedules.

Pure functions, no modules. The numerics are the point of this file:

* Noise is drawn in float32 from the open interval (0, 1), so ``-log(-log(u))``
  is finite for every draw: no retry loop, no ``inf`` ever reaches a logit.
* The sample is computed in float32 whatever the logits' dtype (float16 and
  bfloat16 logits of 1e4 would overflow or lose the noise entirely) and cast
  back at the end.
* The hard sample's argmax is taken on ``logits + noise`` before dividing by
  tau and before the softmax, so it is the Gumbel-max sample exactly,
  distributed as Categorical(softmax(logits)) at every tau, even where the
  softmax saturates to ties.
* The hard sample is ``one_hot + (soft - soft.detach())``: the bracket is
  exactly zero in the forward pass (x - x == 0 in IEEE arithmetic), so the
  sample is exactly one-hot, and its gradient is the soft sample's.
"""
from __future__ import annotations

import math

import torch

__all__ = ["sample_gumbel", "gumbel_softmax", "gumbel_softmax_sample", "tau_at", "TAU_SCHEDULES"]

# Smallest and largest float32 values strictly inside (0, 1).
_U_LOW = torch.finfo(torch.float32).tiny
_U_HIGH = 1.0 - torch.finfo(torch.float32).eps / 2


def sample_gumbel(shape, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Draws standard Gumbel(0, 1) noise in float32, finite for every draw.

    Args:
        shape: Shape of the noise tensor.
        generator: Optional ``torch.Generator`` for reproducible draws; its device
            decides where the noise is drawn when ``device`` is not given.
        device: Device of the result.

    Returns:
        A float32 tensor of Gumbel noise, each value in about [-4.5, 16.7].
    """
    if device is None and generator is not None:
        device = generator.device
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float32)
    u = u.clamp_(_U_LOW, _U_HIGH)  # torch.rand is [0, 1): keep log() away from 0 and 1
    return -torch.log(-torch.log(u))


def gumbel_softmax_sample(logits: torch.Tensor, tau: float = 1.0, dim: int = -1,
                          generator: torch.Generator | None = None):
    """Draws one Gumbel-softmax sample and returns both its forms.

    Args:
        logits: Unnormalised log-probabilities, any float dtype.
        tau: Temperature, > 0.
        dim: The categorical dimension.
        generator: Optional ``torch.Generator``.

    Returns:
        ``(soft, hard, index)``: the relaxed sample ``softmax((logits + g) / tau)``
        and the straight-through one-hot sample (both float32, differentiable
        w.r.t. ``logits``), and the sampled index (int64, ``dim`` removed).
    """
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    noise = sample_gumbel(logits.shape, generator=generator, device=logits.device)
    perturbed = logits.float() + noise
    soft = torch.softmax(perturbed / tau, dim=dim)
    index = perturbed.detach().argmax(dim=dim)
    one_hot = torch.zeros_like(soft).scatter_(dim, index.unsqueeze(dim), 1.0)
    hard = one_hot + (soft - soft.detach())
    return soft, hard, index


def gumbel_softmax(logits: torch.Tensor, tau: float = 1.0, hard: bool = False, dim: int = -1,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Samples from the Gumbel-softmax distribution (Jang et al.; Maddison et al.).

    Args:
        logits: Unnormalised log-probabilities ``[..., K]``, float32/float16/bfloat16.
        tau: Temperature, > 0. Lower is closer to one-hot.
        hard: If True, return an exactly one-hot sample whose gradient is the
            gradient of the soft sample drawn with the same noise (straight-through).
        dim: The categorical dimension.
        generator: Optional ``torch.Generator`` for reproducible samples.

    Returns:
        A tensor of the logits' shape and dtype, summing to 1 along ``dim``.
    """
    soft, hard_sample, _ = gumbel_softmax_sample(logits, tau=tau, dim=dim, generator=generator)
    return (hard_sample if hard else soft).to(logits.dtype)


def _linear(progress: float, tau_max: float, tau_min: float) -> float:
    return tau_max - (tau_max - tau_min) * progress


def _exponential(progress: float, tau_max: float, tau_min: float) -> float:
    # FBNet: tau decays by a constant factor per epoch, from tau_max to tau_min.
    return tau_max * (tau_min / tau_max) ** progress


def _cosine(progress: float, tau_max: float, tau_min: float) -> float:
    return tau_min + 0.5 * (tau_max - tau_min) * (1.0 + math.cos(math.pi * progress))


def _constant(progress: float, tau_max: float, tau_min: float) -> float:
    return tau_max


TAU_SCHEDULES = {"linear": _linear, "exponential": _exponential, "cosine": _cosine,
                 "constant": _constant}


def tau_at(schedule: str, epoch: int, epochs: int, tau_max: float, tau_min: float) -> float:
    """Temperature for an epoch: ``tau_max`` at epoch 0, ``tau_min`` at the last epoch.

    Args:
        schedule: One of ``linear`` (GDAS: 10 -> 0.1), ``exponential`` (FBNet),
            ``cosine`` or ``constant`` (always ``tau_max``).
        epoch: Zero-based epoch.
        epochs: Total number of epochs.
        tau_max: Starting temperature.
        tau_min: Final temperature.

    Returns:
        The temperature as a Python float.
    """
    if schedule not in TAU_SCHEDULES:
        raise ValueError(f"unknown tau schedule {schedule!r}; choose from {sorted(TAU_SCHEDULES)}")
    progress = epoch / (epochs - 1) if epochs > 1 else 1.0
    return float(TAU_SCHEDULES[schedule](min(max(progress, 0.0), 1.0), tau_max, tau_min))
