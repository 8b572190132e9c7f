"""Time one search iteration under each estimator of the logit gradient.

One iteration is the body of ``Searcher.train_epoch`` for a bilevel step:
``architecture.sample_many`` (both samples, one host transfer, the estimator's
extra draws included), ``Searcher.weight_step`` on a train batch and
``Searcher.arch_step`` on a val batch, through the real ``Searcher`` of a small
NAS-Bench-201 supernet. The variants:

* ``straight_through`` (GDAS, the default);
* ``gumbel_rao K=1`` and ``gumbel_rao K=10`` (``search.gumbel_rao_samples``);
* ``reinmax``.

Every variant runs the same architecture (the first GDAS sample of the seeded
supernet, pinned by setting its logits 30 above the others, which no Gumbel
draw overturns; the draws are still made every iteration), on the same
batches, from the same initial weights. Rounds run every variant once, the
order rotating round by round, so that load from other processes hits them
alike. Reported: the median iteration time and the median time of
``sample_many`` alone per variant, and per-round paired ratios (medians over
rounds) against ``straight_through`` and against ``gumbel_rao K=1``.

Usage::

    nice python benchmarks/estimator_cost.py [--rounds 40] [--C 8] [--N 2] [--batch 32] [--image-size 16]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout without an install
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import search_spaces  # noqa: E402
from nas.config import SearchConfig  # noqa: E402
from nas.data import build_search_data, make_synthetic  # noqa: E402
from nas.engine.search import Searcher  # noqa: E402
from nas.sampling.estimators import GUMBEL_RAO, REINMAX, STRAIGHT_THROUGH  # noqa: E402

PIN_GAP = 30.0  # Gumbel noise lies in about [-4.5, 16.7]: a gap of 30 is never overturned
TAU = 1.0
VARIANTS = [("straight_through", STRAIGHT_THROUGH, 1), ("gumbel_rao K=1", GUMBEL_RAO, 1),
            ("gumbel_rao K=10", GUMBEL_RAO, 10), ("reinmax", REINMAX, 1)]


def make_variant(estimator: str, samples: int, args, data, batches, pinned: list[int]):
    """A closure running one bilevel iteration with ``estimator``; returns (iteration s, sample_many s)."""
    space = search_spaces.get("nb201")
    torch.manual_seed(args.seed)
    supernet = space.build_supernet(mode="gdas", num_classes=args.classes, C=args.C, N=args.N)
    settings = SearchConfig(estimator=estimator, gumbel_rao_samples=samples)
    searcher = Searcher(supernet, space, data, settings, seed=args.seed, out_dir=None, log=lambda m: None)
    with torch.no_grad():
        logits = supernet.architecture.logits["cell"]
        logits.zero_()
        logits[torch.arange(logits.shape[0]), pinned] = PIN_GAP
    supernet.train()
    supernet.tau = TAU
    arch = supernet.architecture
    x, y, xv, yv = batches
    pending = {"flag": torch.zeros((), dtype=torch.long)}

    def run() -> tuple[float, float]:
        start = time.perf_counter()
        samples_, carried = arch.sample_many("gdas", TAU, 2, carry=pending["flag"], estimator=estimator,
                                             estimator_samples=samples)
        sampled = time.perf_counter()
        if carried[0]:
            raise RuntimeError(f"{estimator}: non-finite loss or gradient in the benchmark")
        assert samples_[1].indices["cell"] == pinned
        _, _, ok, _ = searcher.weight_step(x, y, samples_[0])
        _, _, arch_ok, _ = searcher.arch_step(xv, yv, samples_[1])
        pending["flag"] = (~(ok & arch_ok)).long()
        end = time.perf_counter()
        return end - start, sampled - start

    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=40, help="timed rounds (each runs every variant once)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument("--C", type=int, default=8)
    parser.add_argument("--N", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    images = make_synthetic(size=4 * args.batch, num_classes=args.classes, image_size=args.image_size, seed=args.seed)
    data = build_search_data(images, 0.5, args.batch, augment=False, seed=args.seed, device=torch.device("cpu"))
    batches = (*next(data.train.epoch(0)), *next(data.val.epoch(0)))
    torch.manual_seed(args.seed)
    probe = search_spaces.get("nb201").build_supernet(mode="gdas", num_classes=args.classes, C=args.C, N=args.N)
    probe.architecture.seed(args.seed)
    pinned = probe.architecture.sample("gdas", TAU).indices["cell"]
    ops = [probe.architecture.op_names[i] for i in pinned]
    runs = {label: make_variant(est, k, args, data, batches, pinned) for label, est, k in VARIANTS}

    times = {label: [] for label in runs}
    sample_times = {label: [] for label in runs}
    labels = list(runs)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    for r in range(args.warmup + args.rounds):
        order = labels[r % len(labels):] + labels[:r % len(labels)]  # rotate: no variant always runs first
        for label in order:
            total, sampled = runs[label]()
            if r >= args.warmup:
                times[label].append(total)
                sample_times[label].append(sampled)
    elapsed = time.perf_counter() - start

    def paired(label: str, base: str) -> float:
        return statistics.median(a / b for a, b in zip(times[label], times[base]))

    print(f"NB201 supernet C={args.C} N={args.N}, batch {args.batch} of {args.image_size}x{args.image_size}, "
          f"{args.classes} classes, CPU, {args.threads} thread(s), torch {torch.__version__}; "
          f"pinned cell ops {ops}; {args.rounds} timed rounds after {args.warmup} warm-up, {elapsed:.0f} s; "
          f"1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after\n")
    print("| variant | iteration median (ms) | quartiles (ms) | sample_many median (ms) "
          "| ratio to straight_through | ratio to gumbel_rao K=1 |")
    print("|---|---:|---:|---:|---:|---:|")
    for label in labels:
        q = statistics.quantiles(times[label], n=4)
        print(f"| {label} | {1e3 * statistics.median(times[label]):.1f} | {1e3 * q[0]:.1f}-{1e3 * q[2]:.1f} "
              f"| {1e3 * statistics.median(sample_times[label]):.2f} | {paired(label, 'straight_through'):.3f} "
              f"| {paired(label, 'gumbel_rao K=1'):.3f} |")


if __name__ == "__main__":
    main()
