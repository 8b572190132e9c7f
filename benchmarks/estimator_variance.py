"""Bias and variance of each estimator of the logit gradient, against the exact gradient.

The problem is one categorical with a few classes and logits ``theta``, and a
loss ``f`` of its one-hot sample ``D``. The exact gradient of ``E[f(D)]`` is
``sum_i grad softmax(theta)_i * f(e_i)``, computed by autograd on that sum.
Each estimator (``nas.sampling.estimators``, the code the search runs) draws
``--draws`` samples as one batch of independent rows, and the per-row logit
gradients give:

* ``bias``: ``|mean - exact|`` (L2), relative to ``|exact|``; ``+-`` is two
  standard errors of that norm's dominant part (``2 sqrt(trace cov / n)``),
  so a bias below it is not resolved by this many draws;
* ``variance``: ``trace cov`` of one draw's gradient (the sum of the per-logit
  variances), relative to ``|exact|^2``;
* ``mse``: mean ``|g - exact|^2`` of one draw, relative to ``|exact|^2``;
* ``cos``: the cosine between the mean and the exact gradient (a bias of
  scale alone, which an optimizer like Adam largely absorbs, leaves it at 1).

Two losses, as in the estimators' papers: ``linear`` ``f(D) = c . D`` and
``quadratic`` ``f(D) = |D - t|^2`` (its derivative at ``D`` depends on ``D``).

Usage::

    nice python benchmarks/estimator_variance.py [--draws 100000] [--seed 0]
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from nas.sampling.estimators import GUMBEL_RAO, REINMAX, STRAIGHT_THROUGH, estimate

THETA = [1.0, 0.4, -0.3, -1.2]        # logits of the categorical (probabilities 0.53, 0.29, 0.15, 0.06)
C = [0.3, -1.0, 2.0, 0.5]             # the linear loss's weights
TARGET = [0.2, 0.7, 0.4, 0.9]         # the quadratic loss's target
TAUS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)


def losses() -> dict:
    """name -> f(D) for D ``[n, K]`` (one value per row)."""
    c, t = torch.tensor(C), torch.tensor(TARGET)
    return {"linear": lambda d: (d * c).sum(-1), "quadratic": lambda d: ((d - t) ** 2).sum(-1)}


def exact_gradient(theta: torch.Tensor, f) -> torch.Tensor:
    """grad of sum_i softmax(theta)_i f(e_i): the gradient every estimator estimates."""
    theta = theta.clone().requires_grad_(True)
    values = f(torch.eye(theta.numel()))                      # [K]: f at each one-hot
    (torch.softmax(theta, -1) * values).sum().backward()
    return theta.grad


def per_draw_gradients(name: str, theta: torch.Tensor, f, tau: float, draws: int, samples: int,
                       generator: torch.Generator) -> torch.Tensor:
    """``[draws, K]``: one estimator's logit gradient of ``f(D)`` for each of ``draws`` independent samples."""
    rows = theta.expand(draws, -1).clone().requires_grad_(True)
    hard, _ = estimate(name, rows, tau, generator, samples)
    f(hard).sum().backward()
    return rows.grad


def statistics(grads: torch.Tensor, exact: torch.Tensor) -> dict:
    """Relative bias (and its two-standard-error resolution), variance and MSE of per-draw gradients."""
    n = grads.shape[0]
    mean = grads.mean(0)
    trace_cov = grads.var(0).sum().item()
    scale = exact.norm().item()
    return {"bias": (mean - exact).norm().item() / scale,
            "resolution": 2 * math.sqrt(trace_cov / n) / scale,
            "variance": trace_cov / scale ** 2,
            "mse": ((grads - exact) ** 2).sum(-1).mean().item() / scale ** 2,
            "cos": torch.nn.functional.cosine_similarity(mean, exact, dim=0).item()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=100_000, help="samples per estimator and tau")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--taus", type=float, nargs="+", default=list(TAUS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    theta = torch.tensor(THETA)
    estimators = [(STRAIGHT_THROUGH, 1), (GUMBEL_RAO, 10), (GUMBEL_RAO, 100), (REINMAX, 1)]
    start = time.perf_counter()
    print(f"theta = {THETA}, probabilities = {[round(p, 3) for p in torch.softmax(theta, -1).tolist()]}, "
          f"{args.draws} draws per cell, seed {args.seed}\n")
    for loss_name, f in losses().items():
        exact = exact_gradient(theta, f)
        print(f"### {loss_name} loss (exact gradient {[round(v, 4) for v in exact.tolist()]}, "
              f"norm {exact.norm():.4f}; rel.: relative to the norm, squared for variance and MSE)\n")
        print("| tau | estimator | bias (rel.) | +-2 SE | variance (rel.) | MSE (rel.) | cos(mean, exact) |")
        print("|---:|---|---:|---:|---:|---:|---:|")
        for tau in args.taus:
            for name, samples in estimators:
                generator = torch.Generator().manual_seed(args.seed)
                grads = per_draw_gradients(name, theta, f, tau, args.draws, samples, generator)
                s = statistics(grads, exact)
                label = f"{name} K={samples}" if name == GUMBEL_RAO else name
                print(f"| {tau:g} | {label} | {s['bias']:.3f} | {s['resolution']:.3f} | {s['variance']:.3f} "
                      f"| {s['mse']:.3f} | {s['cos']:.3f} |")
        print()
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
