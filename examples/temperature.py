"""What the temperature tau does to Gumbel-softmax samples, and what it does not.

    python examples/temperature.py [--quick] [--out DIR] [--samples N] [--seed S]

* The average of *hard* samples is ``softmax(logits)`` at every tau: a hard
  sample is the Gumbel-max sample, whose distribution has no tau in it (tau
  only shapes the straight-through gradient).
* The average of *soft* samples ``softmax((logits + g) / tau)`` does depend on
  tau: near uniform for a large tau, ``softmax(logits)`` as tau -> 0, when each
  soft sample becomes one-hot. GDAS anneals tau from 10 to 0.1 for that reason.

Prints a table of both averages per tau and writes ``DIR/temperature_means.png``
(averages against tau) and ``DIR/temperature_samples.png`` (soft samples on
the 2-simplex and histograms of their first coordinate as tau goes 10 -> 0.01).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

try:
    import nas  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nas.sampling.gumbel import gumbel_softmax_sample

LOGITS = torch.tensor([1.0, 0.0, -1.0])  # three categories: the samples live on a triangle
TAUS = (10.0, 3.0, 1.0, 0.3, 0.1, 0.03, 0.01)
PICTURED_TAUS = (10.0, 1.0, 0.1, 0.01)
COLORS = ("tab:blue", "tab:orange", "tab:green")


def sample_means(n: int, seed: int) -> dict[float, dict[str, torch.Tensor]]:
    """tau -> the mean of ``n`` hard and of ``n`` soft samples (the same noise for both), and 2000 soft samples."""
    out = {}
    for i, tau in enumerate(TAUS):
        generator = torch.Generator().manual_seed(seed * 1000 + i)
        soft, hard, _ = gumbel_softmax_sample(LOGITS.expand(n, len(LOGITS)), tau=tau, generator=generator)
        out[tau] = {"hard": hard.detach().double().mean(0), "soft": soft.double().mean(0), "some_soft": soft[:2000]}
    return out


def _simplex_xy(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Barycentric -> Cartesian: category 0 at (0, 0), 1 at (1, 0), 2 at the apex.
    return y[:, 1] + 0.5 * y[:, 2], (math.sqrt(3) / 2) * y[:, 2]


def plot(out: Path, probs: torch.Tensor, means: dict) -> list[Path]:
    """The two figures; returns their paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    taus = list(means)
    for k, color in enumerate(COLORS):
        ax.plot(taus, [means[t]["hard"][k] for t in taus], "o-", color=color, lw=2,
                label=f"category {k}: mean of hard samples")
        ax.plot(taus, [means[t]["soft"][k] for t in taus], "s--", color=color, alpha=0.7,
                label=f"category {k}: mean of soft samples")
        ax.axhline(probs[k], color=color, lw=0.8, ls=":")
    ax.axhline(1 / 3, color="black", lw=0.8, ls=":", label="dotted: softmax(logits) and uniform 1/3")
    ax.set_xscale("log")
    ax.invert_xaxis()  # read left to right as an annealing schedule: hot -> cold
    ax.set_xlabel("temperature tau (annealing: left to right)")
    ax.set_ylabel("average sample")
    ax.set_title(f"logits {LOGITS.tolist()}: hard samples average softmax(logits) at every tau;\n"
                 "soft samples only as tau -> 0", fontsize=11)
    ax.legend(fontsize=8, ncol=2, loc="center right")
    paths = [out / "temperature_means.png"]
    fig.savefig(paths[0], dpi=120)

    fig = Figure(figsize=(13, 6.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(PICTURED_TAUS))
    corners = torch.eye(3)
    for col, tau in enumerate(PICTURED_TAUS):
        soft = means[tau]["some_soft"]
        top = axes[0, col]
        cx, cy = _simplex_xy(torch.cat([corners, corners[:1]]))
        top.plot(cx, cy, color="black", lw=0.8)
        x, y = _simplex_xy(soft)
        top.scatter(x, y, s=4, alpha=0.35, c=[COLORS[int(k)] for k in soft.argmax(-1)])
        for k, (vx, vy) in enumerate(zip(*_simplex_xy(corners))):
            top.text(vx, vy + (0.06 if k == 2 else -0.09), f"{k} (p={probs[k]:.2f})", ha="center", fontsize=9)
        top.set_title(f"tau = {tau:g}", fontsize=12, fontweight="bold")
        top.set_aspect("equal")
        top.set_xlim(-0.15, 1.15)
        top.set_ylim(-0.15, 1.0)
        top.axis("off")
        bottom = axes[1, col]
        bottom.hist(soft[:, 0].numpy(), bins=40, range=(0, 1), color=COLORS[0],
                    weights=torch.full((len(soft),), 1 / len(soft)).numpy())
        near_one = (soft[:, 0] > 0.99).double().mean().item()
        bottom.set_title(f"y[0] > 0.99 in {100 * near_one:.0f}% of samples (p0 = {100 * probs[0]:.0f}%)",
                         fontsize=9.5)
        bottom.set_xlabel("y[0]")
        if col == 0:
            bottom.set_ylabel("fraction of samples")
    fig.suptitle("Gumbel-softmax samples y = softmax((logits + g) / tau), from near-uniform (hot) to one-hot "
                 "(cold)\ntop: 2,000 samples on the simplex, coloured by their argmax; bottom: histogram of the "
                 "first coordinate y[0]")
    paths.append(out / "temperature_samples.png")
    fig.savefig(paths[1], dpi=120)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 samples per tau instead of 200,000")
    parser.add_argument("--samples", type=int, help="samples per tau")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/examples", help="directory of the PNGs (default runs/examples)")
    args = parser.parse_args(argv)
    n = args.samples or (20_000 if args.quick else 200_000)
    probs = torch.softmax(LOGITS.double(), -1)
    means = sample_means(n, args.seed)

    standard_error = (probs * (1 - probs) / n).sqrt()
    print(f"softmax(logits) = {[round(p, 4) for p in probs.tolist()]}, {n} samples per tau")
    print(f"{'tau':>6}  {'mean of hard samples':>26}  {'max |hard - p| / SE':>19}  {'mean of soft samples':>26}")
    for tau, m in means.items():
        z = ((m["hard"] - probs).abs() / standard_error).max().item()
        hard = " ".join(f"{v:.4f}" for v in m["hard"].tolist())
        soft = " ".join(f"{v:.4f}" for v in m["soft"].tolist())
        print(f"{tau:>6g}  {hard:>26}  {z:>19.2f}  {soft:>26}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        paths = plot(out, probs, means)
    except ImportError:
        print('note: no pictures without matplotlib: pip install -e ".[viz]"')
        return 0
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
