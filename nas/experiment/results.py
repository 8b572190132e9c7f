"""The experiment's results: per-cell means, group statistics, percentiles, noise, rank correlations, tables.

``gather`` turns the jobs' records into ``results.json``'s content and
``format_markdown`` into ``results.md`` (docs/experiment.md says what every
number is); the statistics themselves are in ``rank_stats``.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from ..utils.atomic import atomic_write
from .plan import GROUPS, Cell, Plan
from .rank_stats import (kendall_tau_b, percentile_among, pooled_standard_error, reliability_of_means,
                         standard_error, summarize)

RESULTS_JSON, RESULTS_MD = "results.json", "results.md"
RETRAINED_METRIC = "accuracy after retraining (%)"
GROUP_TITLES = {"searched": "searched", "random": "random", "nonone": "random, none-free"}


def scores_metric(benchmark: str | None) -> str:
    """What a cell's test score is: its accuracy after retraining, or the NB201 benchmark's."""
    if benchmark is None:
        return RETRAINED_METRIC
    from search_spaces.nb201_benchmark import METRIC_NAME

    return f"{METRIC_NAME} (%)"


def _cell_entry(cell: Cell, runs: list[dict]) -> dict:
    val, test = [r["val_acc"] for r in runs], [r["test_acc"] for r in runs]
    return {"name": cell.name, "group": cell.group, "genotype": runs[0]["genotype"], "val_accs": val,
            "test_accs": test, "val_mean": statistics.fmean(val), "val_se": standard_error(val),
            "test_mean": statistics.fmean(test), "test_se": standard_error(test),
            "train_time": sum(r["train_time"] for r in runs)}


def gather(plan: Plan, records: dict[str, dict]) -> dict:
    """The results from every job's record: cells, groups, percentiles, retraining noise, Kendall's tau."""
    cells, zero_free = [], _zero_free_test(plan)
    for cell in plan.cells:
        entry = _cell_entry(cell, [records[i] for i in plan.score_ids(cell)])
        if cell.search:
            search = records[cell.search]
            entry.update(seed=search["seed"], search_val_acc=search.get("val_acc"), search_time=search["search_time"])
        entry["supernet_val_acc"] = {c.search: records[f"{c.search}/supernet"][cell.name]["val_acc"]
                                     for c in plan.cells if c.search}
        entry["zero_free"] = zero_free(entry["genotype"])
        cells.append(entry)
    groups = {g: [c for c in cells if c["group"] == g] for g in GROUPS}
    summary = {g: {split: summarize([c[f"{split}_mean"] for c in members]) for split in ("val", "test")}
               for g, members in groups.items() if members}
    for c in groups["searched"]:
        c["percentile"] = {g: {split: percentile_among(c[f"{split}_mean"], [r[f"{split}_mean"] for r in groups[g]])
                               for split in ("val", "test")} for g in ("random", "nonone") if groups[g]}
    percentiles = {g: {split: summarize([c["percentile"][g][split] for c in groups["searched"]])
                       for split in ("val", "test")} for g in ("random", "nonone") if groups[g]}
    noise = {split: pooled_standard_error([c[f"{split}_accs"] for c in cells]) for split in ("val", "test")}
    # Can this budget rank the random cells at all? (the searched cells are judged against them)
    reliability = {g: {split: reliability_of_means([c[f"{split}_accs"] for c in groups[g]])
                       for split in ("val", "test")} for g in ("random", "nonone") if groups[g]}
    return {"summary": summary, "percentiles": percentiles, "retraining_noise_se": noise,
            "reliability_of_cell_means": reliability, "kendall_tau": _kendall_tau(cells, groups),
            "cells": cells,
            "job_time": sum(c["train_time"] + c.get("search_time", 0.0) for c in cells)}


def _kendall_tau(cells: list[dict], groups: dict[str, list[dict]]) -> dict:
    """Kendall's tau-b between each search's supernet accuracy of every cell and the cells' val means; the
    same over the cells without the zero op (those a search that never derives it must tell apart, where
    the cells with it no longer inflate the figure); and of the supernets' mean score (averaging the
    searches removes what differs between their supernets, not a bias they share)."""
    free = [c for c in cells if c["zero_free"]]

    def tau(members: list[dict], believed) -> float | None:
        return kendall_tau_b([believed(c) for c in members], [c["val_mean"] for c in members]) \
            if len(members) > 1 else None

    def mean(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return statistics.fmean(values) if values else None

    per_search = []
    for search in (c["name"] for c in groups["searched"]):
        per_search.append({"search": search, "cells": len(cells),
                           "tau_b": tau(cells, lambda c: c["supernet_val_acc"][search]),
                           "zero_free_cells": len(free),
                           "tau_b_zero_free": tau(free, lambda c: c["supernet_val_acc"][search])})
    def mean_score(cell: dict) -> float:
        return statistics.fmean(cell["supernet_val_acc"].values())

    return {"per_search": per_search, "mean": mean([t["tau_b"] for t in per_search]),
            "zero_free_mean": mean([t["tau_b_zero_free"] for t in per_search]),
            "of_mean_score": tau(cells, mean_score) if per_search else None,
            "of_mean_score_zero_free": tau(free, mean_score) if per_search else None}


def _zero_free_test(plan: Plan):
    """A test of whether a cell (its genotype string) holds none of the space's zero ops (``none``)."""
    from ..layers.op_traits import ops_with
    from ..spaces.space import get_space

    space = get_space(plan.search_cfgs[0].model.space)
    zero = set(ops_with(space.op_traits(), zero=True))
    return lambda genotype: not any(op in zero for _, _, op in space.genotype_edges(space.parse(genotype)))


def clock(seconds: float) -> str:
    """A duration as ``<minutes>m<seconds>s`` (the progress lines and the job time)."""
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s"


def _cell(genotype: str) -> str:
    # A table cell: GitHub ends a cell at any unescaped `|`, code span or not.
    return "`" + genotype.replace("|", "\\|") + "`"


def _pm(mean: float, se: float | None) -> str:
    return f"{mean:.2f} ± {se:.2f}" if se is not None else f"{mean:.2f}"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_markdown(results: dict) -> str:
    """The results as markdown: groups, percentiles, retraining noise, Kendall's tau, then every cell."""
    R, summary = results["retrain_seeds"], results["summary"]
    searched = (f"Searched with `{results['search_config']}`" +
                (f" + `{' '.join(results['overrides'])}`" if results["overrides"] else "") +
                f" (seeds {results.get('first_seed', 0)}..{results.get('first_seed', 0) + results['seeds'] - 1}); ")
    cells = f"{results['random']} random cells, {results['random_nonone']} none-free random cells."
    if results.get("benchmark"):
        lines = [f"`{results['command']}`", "", searched + f"every cell scored by lookup in `{results['benchmark']}`, "
                 f"nothing retrained; {cells}", "", "**val** = the NB201 benchmark's CIFAR-10-valid accuracy "
                 "(trained on half the training set; what decisions read). **test** = its CIFAR-10 test accuracy "
                 "(reported only). Both after the benchmark's 200-epoch protocol, averaged over its seeds.", ""]
        titles = (("val", "NB201 benchmark CIFAR-10-valid accuracy (hp=200) (%)"), ("test", results["metric"]))
    else:
        lines = [f"`{results['command']}`", "", searched + f"every cell retrained with `{results['final_config']}`, "
                 f"seeds 0..{R - 1}; {cells}",
                 "", f"**val** = accuracy on the {results['val_split'] * 100:g}% of the training set each retraining "
                 "holds out (fixed seed; what decisions read). **test** = the test set (reported only). "
                 f"A cell's accuracy is the mean of its {R} retrainings.", ""]
        titles = (("val", "Val accuracy (%) of the cell means"), ("test", "Test accuracy (%) of the cell means"))
    noise = results["retraining_noise_se"]
    for split, title in titles:
        lines += [f"{title}:", "",
                  "| group | cells | mean | std across cells | min | median | max |", "|---|---|---|---|---|---|---|"]
        for g, s in summary.items():
            s = s[split]
            lines.append(f"| {GROUP_TITLES[g]} | {s['n']} | {s['mean']:.2f} | {s['std']:.2f} | {s['min']:.2f} | "
                         f"{s['median']:.2f} | {s['max']:.2f} |")
        if R:
            lines += ["", f"Retraining noise: standard error of one cell's mean of {R} ({split}), pooled over the "
                          f"cells: {_num(noise[split])}. Reliability of the cell means ({split}; ICC(1,k): the share "
                          "of their spread that is not retraining noise, the expected correlation with another "
                          f"{R} retrainings; 0 = a ranking by noise): " +
                      "; ".join(f"{GROUP_TITLES[g]} {_num(r[split])}"
                                for g, r in results.get("reliability_of_cell_means", {}).items()) + ".", ""]
        else:
            lines.append("")
    for g, p in results["percentiles"].items():
        lines.append(f"Percentile of the searched cells among the {GROUP_TITLES[g]} cells (cell means; ties count "
                     f"half): val mean {p['val']['mean']:.1f} (min {p['val']['min']:.1f}, max {p['val']['max']:.1f}); "
                     f"test mean {p['test']['mean']:.1f} (min {p['test']['min']:.1f}, max {p['test']['max']:.1f}).")
    tau = results["kendall_tau"]
    lines += ["", "Kendall's tau-b between each search's supernet accuracy of every cell (shared weights, the "
                  "search's val split) and the cells' " + ("benchmark val accuracies: " if results.get("benchmark")
                                                       else "retrained val means: ") +
              ", ".join(f"{t['search']} {_num(t['tau_b'], 3)}" for t in tau["per_search"]) +
              f"; mean {_num(tau['mean'], 3)} ({tau['per_search'][0]['cells']} cells). Over the "
              f"{tau['per_search'][0]['zero_free_cells']} cells without the zero op (those a search that never "
              "derives it must tell apart): " +
              ", ".join(f"{t['search']} {_num(t['tau_b_zero_free'], 3)}" for t in tau["per_search"]) +
              f"; mean {_num(tau['zero_free_mean'], 3)}. Of the supernets' mean score: "
              f"{_num(tau['of_mean_score'], 3)} (without the zero op {_num(tau['of_mean_score_zero_free'], 3)}).",
              "",
              "| cell | group | val mean ± se | test mean ± se | pct among random (val / test) | "
              "pct among none-free (val / test) | supernet acc (mean over searches) | genotype |",
              "|---|---|---|---|---|---|---|---|"]
    ordered = [c for c in results["cells"] if c["group"] == "searched"] + \
        sorted((c for c in results["cells"] if c["group"] != "searched"), key=lambda c: -c["val_mean"])
    for c in ordered:
        pct = {g: f"{p['val']:.1f} / {p['test']:.1f}" for g, p in c.get("percentile", {}).items()}
        believed = statistics.fmean(c["supernet_val_acc"].values())
        lines.append(f"| {c['name']} | {GROUP_TITLES[c['group']]} | {_pm(c['val_mean'], c['val_se'])} | "
                     f"{_pm(c['test_mean'], c['test_se'])} | {pct.get('random', '')} | {pct.get('nonone', '')} | "
                     f"{believed:.2f} | {_cell(c['genotype'])} |")
    lines += ["", f"Job time (sum of searches and retrainings): {clock(results['job_time'])}.", ""]
    return "\n".join(lines)


def write_results(results: dict, out: Path) -> None:
    """Writes ``results.json`` and ``results.md`` atomically."""
    text = json.dumps(results, indent=2) + "\n"
    atomic_write(out / RESULTS_JSON, lambda f: f.write(text), mode="w")
    markdown = format_markdown(results)
    atomic_write(out / RESULTS_MD, lambda f: f.write(markdown), mode="w")
