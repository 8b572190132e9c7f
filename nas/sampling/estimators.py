"""Estimators of the logit gradient of a hard (one-hot) categorical sample.

Every estimator here returns the same forward value as GDAS's straight-through
sample: the exact one-hot ``D`` of the sampled op, so only that op runs in the
forward pass (``nas.layers.choice``). They differ only in the surrogate ``s``
whose Jacobian carries the gradient back to the logits: the sample is
``D + (s - s.detach())``, and the bracket is exactly zero in the forward pass.

* ``straight_through`` (GDAS; Jang et al.): ``s = softmax((theta + G) / tau)``
  with the Gumbel noise ``G`` whose argmax chose ``D``. Exactly today's
  ``gumbel_softmax_sample``: same draws, same values, same gradients.
* ``gumbel_rao`` (Paulus, Maddison, Krause, ICLR 2021): ``s`` is the mean of
  ``softmax((theta + G_k) / tau)`` over ``K`` Gumbel vectors drawn from the
  noise's distribution *conditioned on* its argmax being ``D``. The
  straight-through gradient is averaged over the noise that could have made the
  same choice (Rao-Blackwellisation): its expectation is the straight-through
  one, its variance is lower. ``G_1`` is the noise that drew ``D`` itself (it is
  one such conditional draw), so ``K = 1`` is the straight-through estimator
  exactly and ``K - 1`` vectors are drawn afresh. The ``G_k`` are constants
  (no gradient through the conditional sampling: only then is the expectation
  the straight-through one).
* ``reinmax`` (Liu et al., NeurIPS 2023, Algorithm 2): with ``pi0 = softmax(theta)``
  and ``pi1 = (D + softmax(theta / tau)) / 2``, the gradient is that of
  ``2 pi1 - pi0 / 2``, where ``pi1``'s Jacobian is the softmax Jacobian at
  ``pi1`` (``softmax(stopgrad(log pi1 - theta) + theta)`` in the paper). A
  second-order (Heun) approximation of the exact gradient instead of the
  first-order one of straight-through.

The sampled index is always the Gumbel-max choice ``argmax(theta + G)`` of one
``sample_gumbel`` draw of the logits' shape from the sampler's generator, so
``D`` is distributed as ``Categorical(softmax(theta))`` at every tau, and
``gumbel_rao`` only draws *more* from the same generator afterwards (a
checkpoint of the generator's state resumes every estimator bit-exactly).
"""
from __future__ import annotations

from typing import Callable

import torch

from ..utils.registry import Registry
from .gumbel import _U_HIGH, _U_LOW, gumbel_softmax_sample, sample_gumbel

__all__ = ["ESTIMATORS", "STRAIGHT_THROUGH", "GUMBEL_RAO", "REINMAX", "register_estimator", "estimate",
           "conditional_gumbel"]

STRAIGHT_THROUGH, GUMBEL_RAO, REINMAX = "straight_through", "gumbel_rao", "reinmax"

# name -> fn(logits [E, K] float32, tau, generator, samples) -> (hard [E, K] float32, index [E] int64)
ESTIMATORS = Registry("estimator")

Estimator = Callable[[torch.Tensor, float, "torch.Generator | None", int], "tuple[torch.Tensor, torch.Tensor]"]


def register_estimator(name: str) -> Callable[[Estimator], Estimator]:
    """Registers an estimator under ``name`` (a decorator; a duplicate name raises ``KeyError``).

    An estimator is ``fn(logits, tau, generator, samples) -> (hard, index)``: ``logits``
    ``[num_edges, num_ops]`` (any float dtype), the temperature, the sampler's generator
    (or None), the number of samples it may average (``gumbel_rao``); it returns the
    float32 sample, exactly one-hot in value and differentiable w.r.t. ``logits``, and the
    sampled index per edge (int64 ``[num_edges]``).
    """
    return ESTIMATORS.register(name)


def estimate(name: str, logits: torch.Tensor, tau: float, generator: torch.Generator | None = None,
             samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Draws one hard sample of ``logits`` whose logit gradient is estimator ``name``'s.

    Args:
        name: A registered estimator (``straight_through``, ``gumbel_rao``, ``reinmax``).
        logits: ``[..., num_ops]`` unnormalised log-probabilities.
        tau: Temperature, > 0.
        generator: Optional ``torch.Generator`` (all draws come from it).
        samples: ``gumbel_rao``'s K (ignored by the others), >= 1.

    Returns:
        ``(hard, index)``: the float32 one-hot sample and the sampled index (``num_ops`` dim removed).

    Raises:
        UserError: for an unknown estimator name (the message lists the choices).
    """
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    return ESTIMATORS.get(name)(logits, tau, generator, samples)


def _one_hot_sample(logits: torch.Tensor, generator: torch.Generator | None):
    """The Gumbel-max sample as straight-through draws it: ``(logits32, noise, index, one_hot)``."""
    logits32 = logits.float()
    noise = sample_gumbel(logits.shape, generator=generator, device=logits.device)
    index = (logits32.detach() + noise).argmax(dim=-1)                          # [...]
    one_hot = torch.zeros_like(noise).scatter_(-1, index.unsqueeze(-1), 1.0)   # [..., K]
    return logits32, noise, index, one_hot


@torch.no_grad()
def conditional_gumbel(logits: torch.Tensor, index: torch.Tensor, count: int,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Draws Gumbel noise conditioned on its Gumbel-max choice (top-down sampling).

    ``G`` is standard Gumbel noise such that ``argmax(logits + G) == index``. The
    maximum of ``logits + G`` is ``Gumbel(logsumexp(logits))`` whatever the argmax;
    each other entry is ``Gumbel(logits_j)`` truncated below that maximum. With
    ``E ~ Exp(1)``: ``top = logZ - log E_D`` and ``other_j = -log(exp(-top) + E_j exp(-logits_j))``,
    computed in log space so that masked logits (``-1e9``) stay finite.

    Args:
        logits: ``[..., num_ops]`` float32, no gradient taken.
        index: ``[...]`` int64, the condition.
        count: Number of noise vectors to draw.
        generator: Optional ``torch.Generator``.

    Returns:
        ``[count, ..., num_ops]`` float32 noise (constants).
    """
    logits = logits.detach().float()
    u = torch.rand((count, *logits.shape), generator=generator, device=logits.device, dtype=torch.float32)
    log_e = torch.log(-torch.log(u.clamp_(_U_LOW, _U_HIGH)))                         # log E, E ~ Exp(1)
    chosen = index.unsqueeze(-1).unsqueeze(0).expand(count, *index.shape, 1)       # [count, ..., 1]
    top = torch.logsumexp(logits, dim=-1, keepdim=True) - log_e.gather(-1, chosen)  # [count, ..., 1]
    others = -torch.logaddexp(-top, log_e - logits)                                 # [count, ..., num_ops]
    perturbed = others.scatter(-1, chosen, top)
    return perturbed - logits


@register_estimator(STRAIGHT_THROUGH)
def straight_through(logits: torch.Tensor, tau: float, generator: torch.Generator | None = None,
                     samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """GDAS's straight-through Gumbel-softmax sample (``gumbel_softmax_sample``, unchanged)."""
    _, hard, index = gumbel_softmax_sample(logits, tau=tau, generator=generator)
    return hard, index


@register_estimator(GUMBEL_RAO)
def gumbel_rao(logits: torch.Tensor, tau: float, generator: torch.Generator | None = None,
               samples: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """The straight-through sample with its gradient averaged over ``samples`` conditional Gumbel draws."""
    logits32, noise, index, one_hot = _one_hot_sample(logits, generator)
    if samples > 1:
        noise = torch.cat([noise.unsqueeze(0), conditional_gumbel(logits32, index, samples - 1, generator)])
    else:
        noise = noise.unsqueeze(0)
    surrogate = torch.softmax((logits32 + noise) / tau, dim=-1).mean(0)  # [count, ..., K] -> [..., K]
    return one_hot + (surrogate - surrogate.detach()), index


@register_estimator(REINMAX)
def reinmax(logits: torch.Tensor, tau: float, generator: torch.Generator | None = None,
            samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """ReinMax: the gradient of ``2 pi1 - pi0 / 2`` (Liu et al. 2023, Algorithm 2)."""
    logits32, _, index, one_hot = _one_hot_sample(logits, generator)
    pi0 = torch.softmax(logits32, dim=-1)                                               # [..., K]
    pi1 = 0.5 * (one_hot + torch.softmax(logits32.detach() / tau, dim=-1))              # [..., K], constant
    # softmax(stopgrad(log pi1 - theta) + theta) has the value pi1 and the softmax Jacobian at pi1,
    # diag(pi1) - pi1 pi1^T. Written as that Jacobian applied to delta = theta - stopgrad(theta)
    # (exactly 0 in value), it needs no log of a zero entry of pi1 (a masked op).
    delta = logits32 - logits32.detach()
    through_pi1 = pi1 * (delta - (pi1 * delta).sum(-1, keepdim=True))                   # value exactly 0
    return one_hot + (2.0 * through_pi1 - 0.5 * (pi0 - pi0.detach())), index
