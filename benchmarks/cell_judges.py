"""Can a judge cheaper than retraining rank cells? Zero-cost proxies and short training, measured.

A search chooses between cells by some judge: the logits, the supernet's accuracy
(``benchmarks/search_diagnosis.py`` measures that one), or a cheaper stand-in for
retraining. This script measures the stand-ins against cells that were retrained:
every cell found under ``--retrained DIR ...`` (``DIR/<cell>/genotype.yaml`` and
``retrain-seed<r>/final.json``, the layout of ``python -m nas.experiment``'s search
and random-cell directories; a cell found in several places counts once, each
retraining seed once) is scored by

- the zero-cost proxies of ``nas/engine/zero_cost.py`` (``params``, ``synflow``,
  ``naswot``, ``grad_norm``, ``snip``: definitions there);
- ``short-E`` for each ``--short-epochs E``: the val accuracy after training the cell from
  scratch under ``--config`` for E epochs with ``train.val_split=--short-val-split``
  (the retraining's own loop, ``train_final.py``'s);
- with ``--supernets DIR ...`` (experiment directories): each search's supernet accuracy
  of the cells (``search-seed*/supernet_scores.json``, as the experiment's Kendall tau
  reads it) and ``supernet-mean``, their mean, over the cells every search scored.
  If the supernets' errors were noise (which weights a seed happened to train), the
  mean of several would rank better than each; if it does not, they share a bias.

The data-dependent proxies are averaged over ``--init-seeds`` initialisations (each
on the same batch). For each judge the script prints Kendall's tau-b
(``nas.experiment.rank_stats``) against the cells' retrained val and test means,
over the cells without the zero op (``none``: the cells a search that never derives
it has to tell apart) and over all, and the retrained means of the quarter of the
zero-free cells each judge ranks highest (a judge worth using lifts that quarter
above the mean of all). The held-out part of the short training contains the
retraining's val images when both use ``train.val_split`` (the split is nested), so
its test column is the independent one.

    python benchmarks/cell_judges.py --retrained runs/random3 runs/ls_confirm \
        --config configs/experiment_final_clutter_large.yaml --short-epochs 4 8 --out judges.json

``--enumerate`` instead scores every NB201 cell without the zero op (4,096; or those
over ``--enumerate-ops``) by the proxies (``--proxies``) and prints each one's best
cells: what a zero-cost search would pick, to be retrained with ``train_final.py``.

    python benchmarks/cell_judges.py --enumerate --proxies params,synflow,naswot --init-seeds 1 \
        --out space.json

Single thread; the five zero-cost judges take about a second per cell at three
initialisations, a short training about that fraction of a retraining.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import search_spaces  # noqa: E402,F401  (registers the spaces)
from nas.cli.build import build_final_trainer, space_arguments  # noqa: E402
from nas.config import load_config  # noqa: E402
from nas.engine.zero_cost import DATA_FREE, ZERO_COST  # noqa: E402
from nas.experiment.rank_stats import kendall_tau_b  # noqa: E402
from nas.experiment.retrained import read_retrained  # noqa: E402
from nas.layers.op_traits import ops_with  # noqa: E402
from nas.utils.errors import UserError  # noqa: E402


def zero_cost_scores(rows: list[dict], cfg, init_seeds: int, proxies: tuple[str, ...] = tuple(ZERO_COST),
                     log=print, log_every: int = 1) -> None:
    """Adds ``row[name]`` for every zero-cost proxy named (data-dependent ones averaged over ``init_seeds`` inits)."""
    first = rows[0]
    trainer, _, _ = build_final_trainer(cfg, (first["space"], first["genotype"]), log=lambda _: None)
    x, y = next(iter(trainer.train_data.epoch(0)))  # one training batch [B, C, H, W], as the loop sees it
    shape = tuple(trainer.test_data.image_shape)
    classes = int(trainer.test_data.labels.max()) + 1
    started = time.perf_counter()
    for i, row in enumerate(rows):
        space = row["space"]
        for name in proxies:
            values = []
            for seed in range(1 if name in DATA_FREE else init_seeds):
                torch.manual_seed(seed)
                net = space.build_network(row["genotype"], num_classes=classes, in_channels=shape[0],
                                          **space_arguments(cfg, space, network=True, image_size=shape[-1]))
                values.append(ZERO_COST[name](net, x, y))
            row[name] = sum(values) / len(values)
        if (i + 1) % log_every == 0 or i + 1 == len(rows):
            log(f"  [{i + 1}/{len(rows)}] zero-cost {time.perf_counter() - started:.1f}s  {row['cell']}")
            started = time.perf_counter()


def every_nb201_cell(ops: list[str]) -> list[str]:
    """Every NAS-Bench-201 cell whose six edges hold only ``ops`` (arch strings, edges in logit row order)."""
    return [f"|{a}~0|+|{b}~0|{c}~1|+|{d}~0|{e}~1|{f}~2|" for a, b, c, d, e, f in itertools.product(ops, repeat=6)]


def enumerate_space(cfg, init_seeds: int, proxies: tuple[str, ...], ops: list[str] | None) -> list[dict]:
    """Scores every NB201 cell without the zero op (or over ``ops``) by the proxies: what a zero-cost search picks."""
    from nas.spaces.space import get_space

    space = get_space(cfg.model.space)
    if space.name != "nb201":
        raise UserError(f"--enumerate lists NB201 cells only, but --config builds {space.name!r} networks; "
                        "pass a config with model.space=nb201")
    zero = set(ops_with(space.op_traits(), zero=True))
    names = ops or [op for op in space.op_traits() if op not in zero]
    unknown = [op for op in names if op not in space.op_traits()]
    if unknown:
        raise UserError(f"--enumerate-ops: {', '.join(unknown)} not an NB201 op; choose from "
                        f"{', '.join(space.op_traits())}")
    rows = [{"cell": a, "space": space, "genotype": space.parse(a), "zero_free": not zero & set(names)}
            for a in every_nb201_cell(names)]
    print(f"{len(rows)} NB201 cells over {', '.join(names)}")
    zero_cost_scores(rows, cfg, init_seeds, proxies, log_every=256)
    return rows


def short_training_scores(rows: list[dict], config: Path, epochs: int, val_split: float, log=print) -> str:
    """Adds ``row['short-E']``: val accuracy after E epochs of the retraining loop with ``train.val_split``."""
    name = f"short-{epochs}"
    cfg = load_config(config, [f"train.epochs={epochs}", f"train.val_split={val_split}", "train.eval_every=0"])
    for i, row in enumerate(rows):
        started = time.perf_counter()
        trainer, _, _ = build_final_trainer(cfg, (row["space"], row["genotype"]), log=lambda _: None)
        trainer.run()
        row[name] = trainer.history[-1]["val_acc"]
        log(f"  [{i + 1}/{len(rows)}] {name} val {row[name]:.2f}%  {time.perf_counter() - started:.1f}s")
    return name


def supernet_scores(rows: list[dict], dirs: list[Path]) -> list[str]:
    """Adds each search's supernet accuracy of the cells it scored (``supernet:<dir>/<search>``) and
    ``supernet-mean`` (their mean, for the cells every search scored); returns the judges' names."""
    by_cell = {r["cell"]: r for r in rows}
    judges = []
    for root in dirs:
        files = sorted(root.glob("search-seed*/supernet_scores.json")) if root.is_dir() else []
        if not files:
            raise UserError(f"--supernets {str(root)!r} holds no search-seed*/supernet_scores.json; "
                            "pass an output directory of nas.experiment")
        for path in files:
            name = f"supernet:{root.name}/{path.parent.name}"
            for scored in json.loads(path.read_text()).values():
                row = by_cell.get(scored["genotype"])
                if row is not None:
                    row[name] = scored["val_acc"]
                    row.setdefault("_supernets", []).append(scored["val_acc"])
            judges.append(name)
    for row in rows:
        scores = row.pop("_supernets", None)
        if scores and len(scores) == len(judges):  # the same searches behind every cell's mean
            row["supernet-mean"] = sum(scores) / len(scores)
    return judges + ["supernet-mean"]


def judge_report(rows: list[dict], judge: str) -> dict:
    """Kendall's tau-b of a judge against the retrained means (zero-free cells and all) and its top quarter,
    over the cells the judge scored."""
    rows = [r for r in rows if judge in r]
    free = [r for r in rows if r["zero_free"]]

    def tau(cells: list[dict], target: str) -> float | None:
        return kendall_tau_b([r[judge] for r in cells], [r[target] for r in cells]) if len(cells) > 1 else None

    ranked = sorted(free, key=lambda r: -r[judge])
    top = ranked[:max(1, len(ranked) // 4)] if ranked else []
    return {"judge": judge, "zero_free_cells": len(free), "cells": len(rows),
            "tau_val_zero_free": tau(free, "val_acc"), "tau_test_zero_free": tau(free, "test_acc"),
            "tau_val_all": tau(rows, "val_acc"), "tau_test_all": tau(rows, "test_acc"),
            "top_quarter_val": sum(r["val_acc"] for r in top) / len(top) if top else None,
            "top_quarter_test": sum(r["test_acc"] for r in top) / len(top) if top else None,
            "top_cell": ranked[0]["cell"] if ranked else None}


def _fmt(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.3f}"


def _parse_list(text: str | None, flag: str, allowed: tuple[str, ...] | None = None) -> list[str] | None:
    if text is None:
        return None
    names = [t for t in text.split(",") if t]
    bad = [n for n in names if allowed is not None and n not in allowed]
    if not names or bad:
        raise UserError(f"{flag} takes a comma-separated list of {', '.join(allowed or ('names',))}, got {text!r}")
    return names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--retrained", type=Path, nargs="+", help="search or random-cell directories of nas.experiment")
    ap.add_argument("--enumerate", action="store_true",
                    help="instead: score every NB201 cell without the zero op by the proxies, print each one's best")
    ap.add_argument("--enumerate-ops", help="with --enumerate: the ops the cells may hold (comma-separated)")
    ap.add_argument("--config", type=Path, default=Path("configs/experiment_final_clutter_large.yaml"),
                    help="the retraining config (network and data of every judge)")
    ap.add_argument("--proxies", help=f"zero-cost proxies to compute (comma-separated; default all: "
                                      f"{','.join(ZERO_COST)})")
    ap.add_argument("--init-seeds", type=int, default=3, help="initialisations averaged per data-dependent proxy")
    ap.add_argument("--short-epochs", type=int, nargs="*", default=[], help="short trainings to judge by (epochs)")
    ap.add_argument("--short-val-split", type=float, default=0.5, help="held-out share of the short trainings")
    ap.add_argument("--supernets", type=Path, nargs="*", default=[],
                    help="nas.experiment directories whose searches' supernet scores to judge by")
    ap.add_argument("--out", type=Path, help="JSON of every score and figure")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    try:
        if bool(args.retrained) == args.enumerate:
            raise UserError("pass --retrained DIR ... (judge retrained cells) or --enumerate (score the space), "
                            "one of the two")
        if args.init_seeds < 1 or any(e < 1 for e in args.short_epochs) or not 0 < args.short_val_split < 1:
            raise UserError("--init-seeds and --short-epochs must be >= 1 and --short-val-split in (0, 1)")
        proxies = tuple(_parse_list(args.proxies, "--proxies", tuple(ZERO_COST)) or ZERO_COST)
        cfg = load_config(args.config)
        if args.enumerate:
            rows = enumerate_space(cfg, args.init_seeds, proxies, _parse_list(args.enumerate_ops, "--enumerate-ops"))
            return _print_best(rows, proxies, args.out)
        rows = read_retrained(args.retrained)
        if len(rows) < 2:
            raise UserError(f"found {len(rows)} retrained cell(s) under --retrained; need at least 2")
        spaces = {r["space"].name for r in rows}
        if spaces != {cfg.model.space}:
            raise UserError(f"the retrained cells are {', '.join(sorted(spaces))} cells but --config builds "
                            f"{cfg.model.space!r}; pass the config they were retrained with")
        print(f"{len(rows)} retrained cells ({sum(r['zero_free'] for r in rows)} without the zero op)")
        zero_cost_scores(rows, cfg, args.init_seeds, proxies)
        judges = list(proxies)
        if args.supernets:
            judges += supernet_scores(rows, args.supernets)
        for epochs in args.short_epochs:
            judges.append(short_training_scores(rows, args.config, epochs, args.short_val_split))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    reports = [judge_report(rows, j) for j in judges]
    free = [r for r in rows if r["zero_free"]]
    print("\n| judge | zero-free cells | tau-b val | tau-b test | all cells | tau-b val | tau-b test | "
          "retrained val / test of its top quarter (zero-free) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in reports:
        top = "-" if r["top_quarter_val"] is None else f"{r['top_quarter_val']:.2f} / {r['top_quarter_test']:.2f}"
        print(f"| {r['judge']} | {r['zero_free_cells']} | {_fmt(r['tau_val_zero_free'])} | "
              f"{_fmt(r['tau_test_zero_free'])} | {r['cells']} | {_fmt(r['tau_val_all'])} | "
              f"{_fmt(r['tau_test_all'])} | {top} |")
    if free:
        print(f"\nmean of the {len(free)} zero-free cells: val {sum(r['val_acc'] for r in free) / len(free):.2f} / "
              f"test {sum(r['test_acc'] for r in free) / len(free):.2f}")
    _write(args.out, {"cells": _plain(rows), "judges": reports})
    return 0


def _print_best(rows: list[dict], proxies: tuple[str, ...], out: Path | None, top: int = 5) -> int:
    for name in proxies:
        print(f"{name}: highest {top}")
        for row in sorted(rows, key=lambda r: -r[name])[:top]:
            print(f"  {row[name]:.6g}  {row['cell']}")
    _write(out, {"cells": _plain(rows)})
    return 0


def _plain(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("space", "genotype")} for r in rows]  # JSON only


def _write(out: Path | None, record: dict) -> None:
    if out is not None:
        out.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
