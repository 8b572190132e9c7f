"""The Gumbel-max trick: ``argmax(logits + g)``, g ~ Gumbel(0, 1), is an exact sample of softmax(logits).

    python examples/gumbel_max.py [--quick] [--out DIR] [--samples N] [--seed S]

Draws many samples two ways, with ``nas.sampling.gumbel.sample_gumbel`` + argmax and
with ``nas.gumbel_softmax(hard=True)``, and compares their frequencies with
``softmax(logits)`` (a table and Pearson's chi-square test). Then shows that the
argmax of ``softmax((logits + g) / tau)`` is the same for every tau: dividing by
tau > 0 and applying softmax are both increasing maps, so the temperature of a
hard sample changes its gradient, never its value. Writes ``DIR/gumbel_max.png``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

try:
    import nas  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nas import gumbel_softmax, sample_gumbel

LOGITS = torch.tensor([1.5, 0.5, 0.0, -0.5, -2.0])
TAUS = (10.0, 1.0, 0.1, 0.01)


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, float]:
    """Pearson's statistic of observed counts against probabilities, and its p-value (K - 1 dof)."""
    expected = probs * counts.sum()
    stat = ((counts - expected) ** 2 / expected).sum()
    dof = torch.tensor((len(probs) - 1) / 2, dtype=torch.float64)
    p_value = torch.special.gammaincc(dof, stat.double() / 2)  # the chi-square survival function
    return stat.item(), p_value.item()


def draw(n: int, seed: int) -> dict[str, torch.Tensor]:
    """Category counts of ``n`` samples by Gumbel-max and by the hard Gumbel-softmax."""
    k = len(LOGITS)
    generator = torch.Generator().manual_seed(seed)
    gumbel_max = (LOGITS + sample_gumbel((n, k), generator=generator)).argmax(-1)
    hard = gumbel_softmax(LOGITS.expand(n, k), tau=0.5, hard=True, generator=generator)
    assert ((hard == 0) | (hard == 1)).all() and (hard.sum(-1) == 1).all(), "a hard sample must be one-hot"
    return {"gumbel-max": torch.bincount(gumbel_max, minlength=k).double(),
            "gumbel_softmax(hard=True)": hard.sum(0).double()}


def tau_disagreements(n: int, seed: int) -> dict[float, int]:
    """For each tau, in how many of ``n`` draws argmax softmax((logits+g)/tau) differs from argmax(logits+g).

    Zero in exact arithmetic; in float32 only a tie made by rounding (two
    perturbed logits closer than the precision of the softmax) could differ,
    which is why ``nas.sampling.gumbel`` takes the argmax before dividing by tau.
    """
    g = sample_gumbel((n, len(LOGITS)), generator=torch.Generator().manual_seed(seed + 1))
    reference = (LOGITS + g).argmax(-1)
    return {tau: int((torch.softmax((LOGITS + g) / tau, -1).argmax(-1) != reference).sum()) for tau in TAUS}


def plot(path: Path, probs: torch.Tensor, counts: dict[str, torch.Tensor], seed: int) -> None:
    """Frequencies against softmax, and one noise draw relaxed at several temperatures."""
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(12, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    k, width = len(probs), 0.27
    x = torch.arange(k, dtype=torch.float64)
    left.bar(x - width, probs, width, label="softmax(logits)", color="0.6")
    for i, (name, c) in enumerate(counts.items()):
        n = c.sum()
        freq = c / n
        err = 2 * (probs * (1 - probs) / n).sqrt()  # two binomial standard errors
        left.bar(x + i * width, freq, width, yerr=err, capsize=3, label=f"{name} frequency")
    left.set_xticks(x.tolist(), [f"{i}\n(logit {v:+.1f})" for i, v in enumerate(LOGITS.tolist())])
    left.set_ylabel("probability")
    left.set_title(f"{int(next(iter(counts.values())).sum()):,} samples per method vs softmax(logits)")
    left.legend()
    generator = torch.Generator().manual_seed(seed + 2)
    while True:  # a draw whose sample is not the most likely category: the point is that it can be any
        g = sample_gumbel((k,), generator=generator)
        winner = int((LOGITS + g).argmax())
        if winner != int(LOGITS.argmax()):
            break
    for i, tau in enumerate((10.0, 1.0, 0.1)):
        right.bar(x + (i - 1) * width, torch.softmax((LOGITS + g) / tau, -1), width, label=f"tau = {tau:g}")
    right.annotate(f"argmax(logits + g) = {winner}\nat every tau", (winner + width, 1.0),
                   xytext=(winner + 0.9, 0.8), arrowprops=dict(arrowstyle="->"), fontsize=10)
    right.set_xticks(x.tolist(), [str(i) for i in range(k)])
    right.set_ylim(0, 1.05)
    right.set_xlabel("category")
    right.set_ylabel("softmax((logits + g) / tau)")
    right.set_title("one noise draw g relaxed at three temperatures")
    right.legend()
    fig.suptitle("Gumbel-max: argmax(logits + Gumbel noise) ~ Categorical(softmax(logits))")
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 samples instead of 400,000")
    parser.add_argument("--samples", type=int, help="samples per method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/examples", help="directory of the PNG (default runs/examples)")
    args = parser.parse_args(argv)
    n = args.samples or (20_000 if args.quick else 400_000)
    probs = torch.softmax(LOGITS.double(), -1)
    counts = draw(n, args.seed)

    names = list(counts)
    print(f"{'category':>8}  {'logit':>6}  {'softmax p':>9}  " + "  ".join(f"{m:>25}" for m in names))
    for i in range(len(LOGITS)):
        freqs = "  ".join(f"{counts[m][i].item() / n:>25.4f}" for m in names)
        print(f"{i:>8}  {LOGITS[i].item():>+6.2f}  {probs[i].item():>9.4f}  {freqs}")
    for name in names:
        stat, p_value = chi_square(counts[name], probs)
        print(f"chi-square ({name}): {stat:.3f} with {len(LOGITS) - 1} dof, p-value {p_value:.3f}")
    for tau, differ in tau_disagreements(n, args.seed).items():
        print(f"tau {tau:g}: argmax softmax((logits + g) / tau) differs from argmax(logits + g) "
              f"in {differ} of {n} draws")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        plot(out / "gumbel_max.png", probs, counts, args.seed)
    except ImportError:
        print('note: no picture without matplotlib: pip install -e ".[viz]"')
        return 0
    print(f"wrote {out / 'gumbel_max.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
