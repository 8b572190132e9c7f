"""Searched cells against random cells under one retraining budget.

``python -m nas.experiment --search-config CONFIG --final-config FINAL --seeds S --random K --out DIR [key=value ...]``

A searched cell is worth something only if it beats what random sampling
finds for the same cost. The tool searches with seeds ``0..S-1`` (the
overrides apply to the search config), retrains every derived cell and ``K``
random cells of the same space with the final config (one budget, one seed for
all of them), and writes ``DIR/results.json`` and ``DIR/results.md``: mean and
std per group, every cell's accuracy and arch string, and each derived cell's
percentile among the random ones.

Layout: ``DIR/search-seed<s>/`` (a search run dir, plus ``search.json`` once it
has finished) and ``RANDOM_DIR/random-<k>/genotype.yaml``, each with a
``retrain/`` run dir ending in ``final.json``. Finished jobs are skipped and an
interrupted one continues from its checkpoint, so rerunning the same command
resumes. A job dir made with another config is refused, which is what makes
``--random-dir`` safe to share between experiments with the same final config.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..utils.atomic import atomic_write
from ..cli.run_command import CONFIG, guarded_main, open_run_dir, stop_signals
from ..config import Config, build_config, diff_configs, load_config, read_yaml
from ..utils.errors import UserError
from ..spaces.genotype import GENOTYPE, genotype_record, load_genotype, save_genotype
from ..engine.loop import CHECKPOINT, RunDiverged, RunInterrupted
from ..engine.train import FINAL

SEARCH_DONE = "search.json"   # written once a search has run all its epochs
RETRAIN = "retrain"           # the retraining run dir inside each architecture's dir
RESULTS_JSON, RESULTS_MD = "results.json", "results.md"
RANDOM_SEED = 0               # the random cells are one stream of this generator: K=8 is a prefix of K=16
JOB_LOG = "log.txt"           # the epoch lines of a job (the console gets one line per job)


# --------------------------------------------------------------------------- statistics

def percentile_among(value: float, population: list[float]) -> float:
    """Percentage of ``population`` below ``value``, ties counting half (50 = the median).

    Raises:
        ValueError: for an empty population.
    """
    if not population:
        raise ValueError("percentile among an empty population")
    below = sum(p < value for p in population)
    ties = sum(p == value for p in population)
    return 100.0 * (below + 0.5 * ties) / len(population)


def summarize(values: list[float]) -> dict[str, float]:
    """Count, mean, sample std (0 for one value), min, median and max."""
    return {"n": len(values), "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "median": statistics.median(values), "max": max(values)}


# --------------------------------------------------------------------------- jobs

def _file_log(path: Path) -> Callable[[str], None]:
    def log(text: str) -> None:
        with open(path, "a") as f:
            f.write(text + "\n")
    return log


@contextlib.contextmanager
def _job_lock(out: Path) -> Iterator[None]:
    """Holds an exclusive lock on a job dir while its job runs.

    Two experiments sharing ``--random-dir`` then never train the same cell at
    once: the second waits, then finds the job finished and skips it.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking, do not share a random dir between concurrent runs
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_config(out: Path, cfg: Config) -> None:
    """Refuses a job dir made with another config (finished or not: its results would be stale)."""
    if (out / CONFIG).is_file():
        changed = diff_configs(build_config(read_yaml(out / CONFIG)), cfg)
        if changed:
            raise UserError(f"{str(out)!r} was run with a different config ({', '.join(changed[:4])} differ); "
                            "use another --out (or --random-dir) for a different experiment")


def run_search_job(cfg: Config, out: Path) -> tuple[dict, bool]:
    """Runs (or continues) one search; returns its summary and whether it was already finished."""
    with _job_lock(out):
        return _search(cfg, out)


def _search(cfg: Config, out: Path) -> tuple[dict, bool]:
    from ..cli.build import build_searcher

    _check_config(out, cfg)
    if (out / SEARCH_DONE).is_file():
        return json.loads((out / SEARCH_DONE).read_text()), True
    searcher = build_searcher(cfg, log=lambda _: None)
    open_run_dir(out, cfg, resume=(out / CONFIG).is_file(), lock=False)  # _job_lock holds .lock
    searcher.out_dir, searcher.log = out, _file_log(out / JOB_LOG)
    if (out / CHECKPOINT).is_file():
        searcher.resume(out / CHECKPOINT)
    with stop_signals(searcher.request_stop):
        final = searcher.run()
    summary = {"seed": cfg.seed, "genotype": final["genotype"], "val_acc": final.get("val_acc"),
               "epochs": cfg.search.epochs, "search_time": sum(m["epoch_time"] for m in searcher.history)}
    atomic_write(out / SEARCH_DONE, lambda f: f.write(json.dumps(summary, indent=2) + "\n"), mode="w")
    return summary, False


def run_retrain_job(cfg: Config, genotype_path: Path, out: Path) -> tuple[dict, bool]:
    """Retrains (or continues retraining) one genotype; returns ``final.json`` and whether it existed."""
    with _job_lock(out):
        return _retrain(cfg, genotype_path, out)


def _retrain(cfg: Config, genotype_path: Path, out: Path) -> tuple[dict, bool]:
    from ..cli.build import build_final_trainer

    _check_config(out, cfg)
    if (out / FINAL).is_file():
        return json.loads((out / FINAL).read_text()), True
    trainer, space, genotype = build_final_trainer(cfg, genotype_path, log=lambda _: None)
    open_run_dir(out, cfg, resume=(out / CONFIG).is_file(), lock=False)  # _job_lock holds .lock
    kept = out / GENOTYPE
    if kept.is_file() and load_genotype(kept)[1] != genotype:
        raise UserError(f"{str(out)!r} retrains another genotype than {str(genotype_path)!r}; delete {out}")
    if not kept.is_file():
        save_genotype(kept, genotype_record(space, genotype))
    trainer.out_dir, trainer.log = out, _file_log(out / JOB_LOG)
    if (out / CHECKPOINT).is_file():
        trainer.resume(out / CHECKPOINT)
    with stop_signals(trainer.request_stop):
        trainer.run()
    record = trainer.write_summary(space=space.name, genotype=space.format(genotype), dataset=cfg.data.dataset)
    return record, False


def write_random_genotypes(space_name: str, count: int, random_dir: Path) -> list[Path]:
    """Draws ``count`` random cells (one seeded stream) and writes ``random-<k>/genotype.yaml``."""
    from ..spaces.space import get_space

    space = get_space(space_name)
    generator = torch.Generator().manual_seed(RANDOM_SEED)
    paths = []
    for k in range(count):
        genotype = space.random_genotype(generator)
        path = random_dir / f"random-{k}" / GENOTYPE
        if path.is_file():
            if load_genotype(path)[1] != genotype:
                raise UserError(f"{str(path)!r} is not the random cell this tool draws for k={k}; delete it")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_genotype(path, genotype_record(space, genotype, source="random", index=k, seed=RANDOM_SEED))
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- the experiment

def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s"


def _say(line: str) -> None:
    print(line, flush=True)  # progress must show when stdout is a file (nohup), not only at exit


def cell_scorer(final_cfg: Config | None, benchmark: str | Path | None = None):
    """How the experiment scores a cell: ``(genotype_path, job_dir) -> (final.json-like record, skipped)``,
    the metric's name and the job's label.

    With ``benchmark`` (NB201 only) a cell is looked up in NATS-Bench's topology benchmark
    (``nas.nb201_benchmark``: its CIFAR-10 test accuracy after the 200-epoch protocol) and nothing is
    trained; without it the cell is retrained with ``final_cfg``.
    """
    if benchmark is None:
        return (lambda path, job: run_retrain_job(final_cfg, path, job / RETRAIN),
                "Test accuracy (%) after retraining", RETRAIN)
    from search_spaces.nb201_benchmark import METRIC_NAME, NB201Benchmark, experiment_score

    bench = NB201Benchmark(benchmark)
    return lambda path, job: (experiment_score(bench, path), False), f"{METRIC_NAME} (%)", "benchmark"


def run_experiment(search_config: str, final_config: str | None, seeds: int, random: int, out: Path,
                   overrides: list[str] = (), random_dir: Path | None = None,
                   say: Callable[[str], None] = _say, benchmark: str | Path | None = None) -> dict:
    """Runs every job not yet finished and returns the results (also written to ``out``).

    Args:
        search_config: YAML of the search; ``overrides`` apply to it, ``seed`` is set per run.
        final_config: YAML of the retraining budget, the same for every architecture.
        seeds: Searches with seeds ``0..seeds-1``.
        random: Random cells to retrain.
        out: The experiment dir.
        overrides: ``key=value`` overrides of the search config.
        random_dir: Where the random cells' jobs live (default ``out``).
        say: Where the progress lines go.
        benchmark: Score cells by lookup in this NATS-Bench topology benchmark instead of retraining
            (nb201 only; ``final_config`` may then be None).
    """
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    if random < 1:
        raise UserError(f"--random must be >= 1, got {random}")
    import search_spaces  # noqa: F401  (registers the spaces)

    search_cfgs = [load_config(search_config, [*overrides, f"seed={s}"]) for s in range(seeds)]
    if benchmark is not None and search_cfgs[0].model.space != "nb201":
        raise UserError(f"--benchmark looks cells up in NAS-Bench-201, but the search config searches "
                        f"{search_cfgs[0].model.space!r}; drop --benchmark or search model.space=nb201")
    if final_config is None and benchmark is None:
        raise UserError("--final-config is required unless --benchmark scores the cells by lookup")
    final_cfg = load_config(final_config) if final_config is not None else None
    score, metric, label = cell_scorer(final_cfg, benchmark)
    if final_cfg is not None and final_cfg.model.space != search_cfgs[0].model.space:
        raise UserError(f"the final config trains {final_cfg.model.space!r} networks but the search config "
                        f"searches {search_cfgs[0].model.space!r}; set model.space in {final_config}")
    random_dir = random_dir or out
    out.mkdir(parents=True, exist_ok=True)
    random_paths = write_random_genotypes(search_cfgs[0].model.space, random, random_dir)
    total, done, started = 2 * seeds + random, 0, time.perf_counter()

    def report(name: str, what: str, skipped: bool, job_started: float) -> None:
        nonlocal done
        done += 1
        took = "finished earlier, skipped" if skipped else f"{time.perf_counter() - job_started:.0f}s"
        say(f"[{done:>{len(str(total))}}/{total}] {name:<22} {what}  {took}  "
            f"(elapsed {_clock(time.perf_counter() - started)})")

    searched = []
    for cfg in search_cfgs:
        run_dir = out / f"search-seed{cfg.seed}"
        t0 = time.perf_counter()
        summary, skipped = run_search_job(cfg, run_dir)
        val = f" (val {summary['val_acc']:.1f}%)" if summary.get("val_acc") is not None else ""
        report(run_dir.name, f"search: {summary['genotype']}{val}", skipped, t0)
        t0 = time.perf_counter()
        final, skipped = score(run_dir / GENOTYPE, run_dir)
        report(f"{run_dir.name}/{label}", f"test {final['test_acc']:.2f}%", skipped, t0)
        searched.append({"name": run_dir.name, "seed": cfg.seed, "genotype": final["genotype"],
                         "test_acc": final["test_acc"], "search_val_acc": summary.get("val_acc"),
                         "search_time": summary["search_time"], "train_time": final["train_time"]})
    randoms = []
    for path in random_paths:
        t0 = time.perf_counter()
        final, skipped = score(path, path.parent)
        report(f"{path.parent.name}/{label}", f"test {final['test_acc']:.2f}%", skipped, t0)
        randoms.append({"name": path.parent.name, "genotype": final["genotype"], "test_acc": final["test_acc"],
                        "train_time": final["train_time"]})
    population = [r["test_acc"] for r in randoms]
    for s in searched:
        s["percentile"] = percentile_among(s["test_acc"], population)
    command = ["python -m nas.experiment", "--search-config", str(search_config),
               *(["--final-config", str(final_config)] if final_config is not None else []),
               *(["--benchmark", str(benchmark)] if benchmark is not None else []),
               "--seeds", str(seeds), "--random", str(random), "--out", str(out),
               *(["--random-dir", str(random_dir)] if random_dir != out else []), *overrides]
    results = {
        "command": " ".join(command), "search_config": str(search_config), "final_config": str(final_config) if final_config is not None else None, "overrides": list(overrides),
        "seeds": seeds, "random": random, "random_dir": str(random_dir), "metric": metric,
        "benchmark": str(benchmark) if benchmark is not None else None,
        "summary": {"searched": summarize([s["test_acc"] for s in searched]), "random": summarize(population),
                    "searched_percentile": summarize([s["percentile"] for s in searched])},
        "searched": searched, "random_cells": randoms,
        "job_time": sum(s["search_time"] + s["train_time"] for s in searched) + sum(r["train_time"] for r in randoms),
        "wall_time_this_invocation": time.perf_counter() - started,
    }
    write_results(results, out)
    return results


# --------------------------------------------------------------------------- tables

def _cell(genotype: str) -> str:
    # A table cell: GitHub ends a cell at any unescaped `|`, code span or not.
    return "`" + genotype.replace("|", "\\|") + "`"


def format_markdown(results: dict) -> str:
    """The results as markdown: the two groups' statistics, then every architecture."""
    summary = results["summary"]
    lines = [f"`{results['command']}`", "", f"Searched with `{results['search_config']}`" +
             (f" + `{' '.join(results['overrides'])}`" if results["overrides"] else "") +
             f" (seeds 0..{results['seeds'] - 1}); "
             + (f"scored by lookup in `{results['benchmark']}`, nothing retrained; " if results.get("benchmark")
                else f"retrained with `{results['final_config']}`; ")
             + f"{results['random']} random cells. {results.get('metric', 'Test accuracy (%)')}:", "",
             "| group | n | mean | std | min | median | max |", "|---|---|---|---|---|---|---|"]
    for group in ("searched", "random"):
        s = summary[group]
        lines.append(f"| {group} | {s['n']} | {s['mean']:.2f} | {s['std']:.2f} | {s['min']:.2f} | "
                     f"{s['median']:.2f} | {s['max']:.2f} |")
    p = summary["searched_percentile"]
    lines += ["", f"Percentile of the searched cells among the random ones: mean {p['mean']:.1f}, "
              f"min {p['min']:.1f}, max {p['max']:.1f} (ties count half).", "",
              "| architecture | test acc | percentile | search val acc | genotype |", "|---|---|---|---|---|"]
    for s in results["searched"]:
        val = f"{s['search_val_acc']:.2f}" if s.get("search_val_acc") is not None else "-"
        lines.append(f"| {s['name']} | {s['test_acc']:.2f} | {s['percentile']:.1f} | {val} | {_cell(s['genotype'])} |")
    for r in sorted(results["random_cells"], key=lambda r: -r["test_acc"]):
        lines.append(f"| {r['name']} | {r['test_acc']:.2f} | | | {_cell(r['genotype'])} |")
    lines += ["", f"Job time (sum of searches and retrainings): {_clock(results['job_time'])}.", ""]
    return "\n".join(lines)


def write_results(results: dict, out: Path) -> None:
    """Writes ``results.json`` and ``results.md`` atomically."""
    text = json.dumps(results, indent=2) + "\n"
    atomic_write(out / RESULTS_JSON, lambda f: f.write(text), mode="w")
    markdown = format_markdown(results)
    atomic_write(out / RESULTS_MD, lambda f: f.write(markdown), mode="w")


# --------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    """The experiment's arguments."""
    p = argparse.ArgumentParser(prog="python -m nas.experiment",
                                description="Searched cells against random cells under one retraining budget.")
    p.add_argument("--search-config", required=True, help="YAML config of the search (e.g. configs/quickstart.yaml)")
    p.add_argument("--final-config", help="YAML config of the retraining budget (not needed with --benchmark)")
    p.add_argument("--benchmark", metavar="PATH", help="score every cell by lookup in the NATS-Bench topology "
                                                       "benchmark (NB201 only: NATS-tss-v1_0-3ffb9-simple) "
                                                       "instead of retraining it")
    p.add_argument("--seeds", type=int, default=2, help="searches, with seeds 0..S-1 (default 2)")
    p.add_argument("--random", type=int, default=8, help="random cells retrained (default 8)")
    p.add_argument("--out", required=True, help="experiment dir; rerunning with the same dir resumes")
    p.add_argument("--random-dir", help="where the random cells' jobs live (default: --out); share it "
                                        "between experiments with the same final config")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: these small networks gain little from more, and "
                        "on a shared machine extra threads cost far more than they give)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="search config overrides")
    return p


def run(args: argparse.Namespace) -> int:
    """The command: runs the experiment and prints the markdown table."""
    if args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    for flag, value, high in (("--threads", args.threads, 1024), ("--seeds", args.seeds, 1000),
                              ("--random", args.random, 10_000)):
        if value > high:  # each is a process-long loop or thread pool: a huge value only exhausts the machine
            raise UserError(f"{flag} must be <= {high:,}, got {value}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    try:
        results = run_experiment(args.search_config, args.final_config, args.seeds, args.random, out,
                                 args.overrides, Path(args.random_dir) if args.random_dir else None,
                                 benchmark=args.benchmark)
    except RunInterrupted as e:
        print(f"{e}; rerun the same command to continue", file=sys.stderr)
        return 128 + e.signum
    except RunDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # an unwritable or full --out / --random-dir: one line naming the file
        raise UserError(f"cannot write {str(e.filename or out)!r}: {e.strerror or e}; "
                        "choose a writable --out (and --random-dir) with free space") from None
    print(format_markdown(results))
    print(f"wrote {out / RESULTS_MD} and {out / RESULTS_JSON}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m nas.experiment``."""
    return guarded_main(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
