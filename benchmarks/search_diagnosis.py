"""Why does a search not settle? Two measurements on one search config.

(a) Signal-to-noise ratio of the logit gradient. The arch step's gradient of
    every logit is recorded at every step. Over a window of W consecutive steps,
    a logit's SNR is ``|mean| / std`` of its W gradients; an edge's SNR is the
    mean over its ops. The same search is run again with the labels of the
    search data permuted (a fixed permutation, weights and arch steps alike):
    nothing can be learned, so whatever SNR it shows is the noise floor (a
    zero-mean gradient gives about ``0.8 / sqrt(W)``). Signal well above the
    floor means the logits are told something; at the floor they random-walk.
(b) Whether the shared weights rank cells: with ``--retrained DIR`` (a directory of
    retrained cells, such as the random-cell directory of ``python -m nas.experiment``:
    ``DIR/<cell>/genotype.yaml`` and ``retrain-seed<r>/final.json``; a cell found
    twice counts once), every cell is evaluated on the search's
    final supernet (its own val split, as the experiment's supernet scores) and
    Kendall's tau-b between those accuracies and the retrained val accuracies is
    printed (``nas.experiment.rank_stats``), over all cells and over the cells
    without the space's zero op (``none``): the cells a search that never
    derives ``none`` has to tell apart. A search without arch steps
    (``search.warmup_epochs`` >= ``search.epochs``: uniform sampling) has no
    gradient to measure; it gets (b) only.

    python benchmarks/search_diagnosis.py --config configs/quickstart.yaml \
        --out /tmp/diag.json --retrained runs/random search.epochs=12

Writes a JSON of every figure (``--out``) and prints a table. Single thread.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import search_spaces  # noqa: E402,F401  (registers the spaces)
from nas.cli.build import build_searcher  # noqa: E402
from nas.config import load_config  # noqa: E402
from nas.experiment.rank_stats import kendall_tau_b  # noqa: E402
from nas.experiment.retrained import read_retrained  # noqa: E402
from nas.utils.errors import UserError  # noqa: E402


def permute_labels(searcher, seed: int = 0) -> None:
    """Replaces the labels of every search loader with a fixed permutation of themselves (the noise-only run)."""
    g = torch.Generator().manual_seed(seed)
    for loader in (searcher.data.train, searcher.data.val, searcher.data.val_eval):
        perm = torch.randperm(len(loader.labels), generator=g)
        loader.labels = loader.labels[perm.to(loader.labels.device)]


def record_search(cfg, shuffle: bool) -> tuple[object, dict[str, torch.Tensor], float]:
    """Runs the search, recording each arch step's logit gradient: ``(searcher, group -> [steps, edges, ops], seconds)``."""
    searcher = build_searcher(cfg, None, log=lambda s: None)
    if shuffle:
        permute_labels(searcher)
    grads: dict[str, list[torch.Tensor]] = {g: [] for g in searcher.supernet.architecture.logits}
    step = searcher.arch_step

    def recording_step(x, y, sample=None):
        out = step(x, y, sample)
        for g, p in searcher.supernet.architecture.logits.items():
            # the optimizer leaves p.grad in place after its step; a masked op reads 0
            grads[g].append(p.grad.detach().cpu().clone() if p.grad is not None else torch.zeros_like(p).cpu())
        return out

    searcher.arch_step = recording_step
    start = time.perf_counter()
    searcher.run()
    # no arch step at all (search.warmup_epochs >= search.epochs: uniform sampling): no gradient to measure
    return searcher, {g: torch.stack(v) for g, v in grads.items() if v}, time.perf_counter() - start


def window_snr(grads: torch.Tensor, window: int) -> torch.Tensor:
    """``[windows, edges]``: per window of ``window`` steps, each edge's mean over ops of ``|mean| / std``."""
    n = grads.shape[0] // window
    out = []
    for w in range(n):
        chunk = grads[w * window:(w + 1) * window].double()        # [W, edges, ops]
        std = chunk.std(0)
        snr = torch.where(std > 0, chunk.mean(0).abs() / std.clamp_min(1e-30), torch.zeros_like(std))
        live = (std > 0).double()                                  # ops still candidates (a dropped op has no gradient)
        out.append((snr * live).sum(-1) / live.sum(-1).clamp_min(1))
    return torch.stack(out) if out else torch.zeros(0, grads.shape[1])


def supernet_tau(searcher, retrained: list[dict]) -> dict:
    """Kendall's tau-b between the supernet's val accuracy of each retrained cell (``read_retrained``'s rows)
    and its retrained val accuracy."""
    rows = []
    for cell in retrained:
        _, supernet_acc = searcher.evaluate(searcher.data.val_eval, cell["genotype"])
        rows.append({"cell": Path(cell["where"]).name, "supernet_val_acc": supernet_acc, "zero_free": cell["zero_free"],
                     "retrained_val_acc": cell["val_acc"], "retrained_test_acc": cell["test_acc"]})

    def tau(cells: list[dict], target: str) -> float | None:
        if len(cells) < 2:
            return None
        return kendall_tau_b([r["supernet_val_acc"] for r in cells], [r[target] for r in cells])

    zero_free = [r for r in rows if r["zero_free"]]
    return {"cells": rows, "kendall_tau_b": tau(rows, "retrained_val_acc"),
            "zero_free_cells": len(zero_free), "zero_free_kendall_tau_b": tau(zero_free, "retrained_val_acc"),
            "zero_free_kendall_tau_b_test": tau(zero_free, "retrained_test_acc")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    ap.add_argument("--window", type=int, default=0, help="steps per SNR window (default: one epoch's steps)")
    ap.add_argument("--retrained", type=Path, help="random-cell dir of nas.experiment, for (b)")
    ap.add_argument("--no-shuffled", action="store_true", help="skip the noise-only (permuted labels) run")
    ap.add_argument("--out", type=Path, required=True, help="JSON of every figure")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(args.config, args.overrides + ["search.report=false", "search.eval_every=0"])
    try:  # read before the searches, so a bad directory is said before minutes of work
        retrained = read_retrained([args.retrained]) if args.retrained else None
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result: dict = {"config": args.config, "overrides": args.overrides, "runs": {}}
    for name in ("real", "shuffled")[: 1 if args.no_shuffled else 2]:
        searcher, grads, seconds = record_search(cfg, shuffle=name == "shuffled")
        window = args.window or searcher.steps_per_epoch()
        run = {"seconds": round(seconds, 1), "steps": next(iter(grads.values())).shape[0] if grads else 0,
               "window": window,
               "final_genotype": searcher.history[-1]["genotype"],
               "final_settling": searcher.history[-1]["settling"]["mean_top_p"],
               "noise_floor_zero_mean": round(math.sqrt(2 / math.pi) / math.sqrt(window - 1), 4), "snr": {}}
        for g, x in grads.items():
            snr = window_snr(x, window)                                    # [windows, edges]
            run["snr"][g] = {"per_window_median_over_edges": [round(float(v), 4) for v in snr.median(1).values],
                             "per_edge_mean_over_windows": [round(float(v), 4) for v in snr.mean(0)],
                             "median": round(float(snr.median()), 4)}
        if name == "real" and retrained is not None:
            run["ranking"] = supernet_tau(searcher, retrained)
        result["runs"][name] = run
        print(f"{name}: {run['steps']} arch steps in {seconds:.0f}s; derived {run['final_genotype']}")
        for g, s in run["snr"].items():
            print(f"  {g}: SNR (W={window}) median {s['median']:.3f}; per window {s['per_window_median_over_edges']}; "
                  f"per edge {s['per_edge_mean_over_windows']}")
        if "ranking" in run:
            r = run["ranking"]
            print(f"  supernet vs retrained ({len(r['cells'])} cells): Kendall tau-b {r['kendall_tau_b']}; "
                  f"the {r['zero_free_cells']} cells without a zero op: {r['zero_free_kendall_tau_b']} "
                  f"(against their test accuracy: {r['zero_free_kendall_tau_b_test']})")
            for c in r["cells"]:
                print(f"    {c['cell']}: supernet {c['supernet_val_acc']:.1f}%  retrained val {c['retrained_val_acc']:.1f}%")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
