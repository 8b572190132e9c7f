"""Searched cells against random cells under one retraining budget, with evidence that holds up.

``python -m nas.experiment --search-config CONFIG --final-config FINAL --seeds S --random K --out DIR [key=value ...]``
``python -m nas.experiment --search-config CONFIG --benchmark NATS_FILE --seeds S --random K --out DIR`` (nb201)

A searched cell is worth something only if it beats what random sampling
finds for the same cost. The tool searches with seeds ``0..S-1`` (the
overrides apply to the search config) and retrains every derived cell, ``K``
random cells and ``K'`` none-free random cells (``--random-nonone``: is it just
the exclusion of ``none``?) with the final config and seeds ``0..R-1``
(``--retrain-seeds``). Each retraining holds out a fixed part of its training
set (``train.val_split``) and reports val (what decisions read) and test (only
reported). Each search's final supernet scores every cell on the search's val
split, and Kendall's tau-b compares that with the retrained val means.
``DIR/results.json`` and ``DIR/results.md`` hold per-cell means and standard
errors, per-group statistics, each derived cell's percentile among either
random group, the pooled retraining noise and the rank correlations
(docs/experiment.md). With ``--benchmark`` (NB201 only) nothing is retrained:
each cell is scored by lookup in the NATS-Bench topology benchmark (val = its
CIFAR-10-valid accuracy, test = its CIFAR-10 test accuracy, hp=200).

Layout: ``DIR/search-seed<s>/`` (a search run dir, plus ``search.json`` once it
has finished and ``supernet_scores.json``) and
``RANDOM_DIR/{random,nonone}-<k>/genotype.yaml``, each cell with
``retrain-seed<r>/`` run dirs ending in ``final.json``. Every piece is one job
(``nas.jobs``): finished jobs are skipped and an interrupted one continues from
its checkpoint, so rerunning the same command resumes; ``--workers N`` runs N at
once, ``--print-jobs`` prints one shell command per job for a scheduler. A job
dir made with another config is refused, which is what makes ``--random-dir``
safe to share between experiments with the same final config.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..utils.atomic import atomic_write
from ..cli.run_command import CONFIG, guarded_main, open_run_dir, stop_signals
from ..config import Config, build_config, diff_configs, load_config, read_yaml
from ..utils.errors import UserError
from ..utils.limits import MAX_SEED
from ..layers.op_traits import ops_with
from ..spaces.genotype import GENOTYPE, genotype_record, load_genotype, save_genotype
from .jobs import Job, job_command, run_jobs, threads_per_worker
from ..engine.loop import CHECKPOINT, RunDiverged, RunInterrupted
from .rank_stats import (kendall_tau_b, percentile_among, pooled_standard_error, reliability_of_means,
                         standard_error, summarize)
from ..engine.train import FINAL

SEARCH_DONE = "search.json"   # written once a search has run all its epochs
RETRAIN = "retrain"           # the retraining run dir inside each architecture's dir
RESULTS_JSON, RESULTS_MD = "results.json", "results.md"
RANDOM_SEED = 0               # the random cells are one stream of this generator: K=8 is a prefix of K=16
NONONE_SEED = 1               # the none-free random cells: a stream of their own, also a prefix for any K
JOB_LOG = "log.txt"           # the epoch lines of a job (the console gets one line per job)
SUPERNET_SCORES = "supernet_scores.json"  # in a search's dir: its supernet's accuracy of every cell
BENCHMARK = "benchmark"       # the lookup job of a cell scored by the NB201 benchmark (no dir of its own)
RETRAINED_METRIC = "accuracy after retraining (%)"
DEFAULT_VAL_SPLIT = 0.1       # the retrainings' held-out val part when the final config sets none


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
               "epochs": cfg.search.epochs,
               # training, plus the final selection under search.select=op_marginals
               "search_time": sum(m["epoch_time"] + m.get("selection_time", 0.0) for m in searcher.history)}
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


def random_cells_can_hold_none(space) -> bool:
    """Whether the space's random cells may hold its zero op (``none``; cells with ``edge_ops``: nb201)."""
    return (bool(ops_with(space.op_traits(), zero=True))
            and hasattr(space.random_genotype(torch.Generator().manual_seed(0)), "edge_ops"))


def write_random_genotypes(space_name: str, count: int, random_dir: Path, none_free: bool = False) -> list[Path]:
    """Draws ``count`` random cells (one seeded stream) and writes ``<prefix>-<k>/genotype.yaml``.

    ``none_free`` draws from a stream of its own (``NONONE_SEED``) and redraws
    every cell that holds ``none``: uniform over the cells without it
    (``nonone-<k>``); otherwise ``random-<k>``, uniform over the whole space.
    """
    from ..spaces.space import get_space

    space = get_space(space_name)
    prefix, seed = ("nonone", NONONE_SEED) if none_free else ("random", RANDOM_SEED)
    if none_free and count and not random_cells_can_hold_none(space):  # 0 cells: the default for such spaces
        raise UserError(f"--random-nonone applies to spaces whose random cells may hold 'none' (nb201); "
                        f"the {space.name} space's never do: use --random-nonone 0")
    generator = torch.Generator().manual_seed(seed)
    zero_ops = set(ops_with(space.op_traits(), zero=True))  # the declared zero op (nb201: none)
    paths = []
    for k in range(count):
        genotype = space.random_genotype(generator)
        while none_free and any(op in zero_ops for _, _, op in space.genotype_edges(genotype)):
            genotype = space.random_genotype(generator)
        path = random_dir / f"{prefix}-{k}" / GENOTYPE
        if path.is_file():
            if load_genotype(path)[1] != genotype:
                raise UserError(f"{str(path)!r} is not the random cell this tool draws for k={k}; delete it")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_genotype(path, genotype_record(space, genotype, source=prefix, index=k, seed=seed))
        paths.append(path)
    return paths


def _wanted_scores(run_dir: Path, cells: dict[str, str]) -> tuple[dict, dict, dict]:
    """``(genotypes, formatted, stored)``: each cell's genotype and string, and the scores already stored."""
    genotypes, formatted = {}, {}
    for name, path in cells.items():
        space, genotypes[name] = load_genotype(path)
        formatted[name] = space.format(genotypes[name])
    stored = json.loads((run_dir / SUPERNET_SCORES).read_text()) if (run_dir / SUPERNET_SCORES).is_file() else {}
    return genotypes, formatted, stored


def supernet_scores_done(run_dir: Path, cells: dict[str, str]) -> bool:
    """Whether ``SUPERNET_SCORES`` already holds every cell (by name and genotype)."""
    if not all(Path(p).is_file() for p in cells.values()):
        return False
    _, formatted, stored = _wanted_scores(run_dir, cells)
    return all(stored.get(n, {}).get("genotype") == g for n, g in formatted.items())


def score_on_supernet(cfg: Config, run_dir: Path, cells: dict[str, str]) -> tuple[dict, bool]:
    """Accuracy of each cell on a finished search's supernet (shared weights, the search's val split).

    What the search believes of each cell: ``Searcher.evaluate`` of the cell on
    the final checkpoint, over ``data.val_eval``. Stored in ``SUPERNET_SCORES``
    (name -> genotype, val_acc, val_loss); cells already there are not scored again.

    Args:
        cfg: The search's config.
        run_dir: The search's run dir (with its final ``checkpoint.pt``).
        cells: name -> genotype file of every cell to score.
    """
    from ..cli.build import build_searcher

    with _job_lock(run_dir):
        genotypes, formatted, stored = _wanted_scores(run_dir, cells)
        todo = [n for n, g in formatted.items() if stored.get(n, {}).get("genotype") != g]
        if not todo:
            return {n: stored[n] for n in cells}, True
        if not (run_dir / CHECKPOINT).is_file():
            raise UserError(f"{str(run_dir)!r} has no {CHECKPOINT}, whose supernet scores the cells; "
                            f"delete {run_dir} and rerun to search again")
        searcher = build_searcher(cfg, log=lambda _: None)
        searcher.resume(run_dir / CHECKPOINT)
        for name in todo:
            loss, acc = searcher.evaluate(searcher.data.val_eval, genotypes[name])
            stored[name] = {"genotype": formatted[name], "val_acc": acc, "val_loss": loss}
        text = json.dumps(stored, indent=2) + "\n"
        atomic_write(run_dir / SUPERNET_SCORES, lambda f: f.write(text), mode="w")
        return {n: stored[n] for n in cells}, False


def score_by_benchmark(benchmark: str, genotype_path: Path) -> tuple[dict, bool]:
    """Scores one NB201 cell by lookup in the NATS-Bench topology benchmark instead of retraining it.

    Returns a ``final.json``-like record (``val_acc`` = the benchmark's CIFAR-10-valid accuracy,
    ``test_acc`` = its CIFAR-10 test accuracy, both after the 200-epoch protocol) and False (a
    lookup is cheap, so it is never stored and never skipped).
    """
    from search_spaces.nb201_benchmark import NB201Benchmark, experiment_score

    record = experiment_score(NB201Benchmark(benchmark), genotype_path)
    record["val_acc"] = record["benchmark"]["cifar10"]["valid"]
    return record, False


def execute_job(job: Job) -> tuple[dict, bool]:
    """Runs one job by its kind (``JOB_KINDS``); returns its record and whether it had finished earlier."""
    import search_spaces  # noqa: F401  (registers the spaces in a spawned worker)

    return JOB_KINDS[job.kind](**job.spec)


# kind -> function(**spec) -> (record, skipped). A retraining's record is its final.json; ``gather`` reads its
# genotype, val_acc, test_acc and train_time, so another way to score a cell returns those keys.
JOB_KINDS: dict[str, Callable[..., tuple[dict, bool]]] = {
    "search": run_search_job, "retrain": run_retrain_job, "supernet": score_on_supernet,
    BENCHMARK: score_by_benchmark}


def job_done(job: Job) -> bool:
    """Whether a job's result is on disk (it would be skipped)."""
    if job.kind == "search":
        return (job.spec["out"] / SEARCH_DONE).is_file()
    if job.kind == "supernet":
        return supernet_scores_done(job.spec["run_dir"], job.spec["cells"])
    if job.kind == BENCHMARK:
        return False  # a lookup: never stored, redone on every run
    return (job.spec["out"] / FINAL).is_file()


# --------------------------------------------------------------------------- the experiment

GROUPS = ("searched", "random", "nonone")
GROUP_TITLES = {"searched": "searched", "random": "random", "nonone": "random, none-free"}


@dataclass
class Cell:
    """One architecture of the experiment and where its retrainings live."""

    name: str          # search-seed<s>, random-<k> or nonone-<k>
    group: str         # one of GROUPS
    genotype: Path     # its genotype.yaml (a searched cell's exists once its search has finished)
    search: str = ""   # the id of the search job that makes it (searched cells)


@dataclass
class Plan:
    """Everything the experiment runs, in serial order."""

    search_cfgs: list
    retrain_cfgs: list
    cells: list
    jobs: list
    val_split: float | None        # None when the benchmark scores the cells
    benchmark: str | None = None   # the NATS-Bench file that scores the cells instead of retraining

    def score_ids(self, cell: Cell) -> list[str]:
        """The ids of the jobs whose records are the cell's scores (its retrainings, or its lookup)."""
        if self.benchmark is not None:
            return [f"{cell.name}/{BENCHMARK}"]
        return [f"{cell.name}/{RETRAIN}-seed{r}" for r in range(len(self.retrain_cfgs))]


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s"


def _say(line: str) -> None:
    print(line, flush=True)  # progress must show when stdout is a file (nohup), not only at exit


def plan_experiment(search_config: str, final_config: str | None, seeds: int, random: int, out: Path,
                    overrides: list[str] = (), random_dir: Path | None = None, retrain_seeds: int = 3,
                    random_nonone: int | None = None, val_split: float | None = None,
                    benchmark: str | Path | None = None, first_seed: int = 0) -> Plan:
    """Checks the options, writes the random cells' genotypes and lists the jobs (see ``run_experiment``)."""
    for flag, value, low in (("--seeds", seeds, 1), ("--random", random, 1), ("--retrain-seeds", retrain_seeds, 1),
                             ("--random-nonone", 0 if random_nonone is None else random_nonone, 0)):
        if value < low:
            raise UserError(f"{flag} must be >= {low}, got {value}")
    if not 0 <= first_seed <= MAX_SEED - seeds + 1:
        raise UserError(f"--first-seed must be in [0, {MAX_SEED - seeds + 1:,}] with --seeds {seeds}, got {first_seed}")
    if val_split is not None and not 0 < val_split < 1:
        raise UserError(f"--val-split must be in (0, 1), got {val_split}")
    import search_spaces  # noqa: F401  (registers the spaces)
    from ..spaces.space import get_space

    search_cfgs = [load_config(search_config, [*overrides, f"seed={s}"]) for s in range(first_seed, first_seed + seeds)]
    space_name = search_cfgs[0].model.space
    if benchmark is not None:
        if space_name != "nb201":
            raise UserError(f"--benchmark looks cells up in NAS-Bench-201, but the search config searches "
                            f"{space_name!r}; drop --benchmark or search model.space=nb201")
        if final_config is not None:
            raise UserError("--benchmark scores the cells by lookup and --final-config by retraining; use one")
        from search_spaces.nb201_benchmark import NB201Benchmark

        NB201Benchmark(benchmark)  # a missing or malformed file: one line now, not after the searches
        retrain_cfgs, val_split = [], None
    else:
        if final_config is None:
            raise UserError("--final-config is required unless --benchmark scores the cells by lookup")
        final_cfg = load_config(final_config)
        if final_cfg.model.space != space_name:
            raise UserError(f"the final config trains {final_cfg.model.space!r} networks but the search config "
                            f"searches {space_name!r}; set model.space in {final_config}")
        # Decisions read a validation accuracy: the retrainings hold out part of the training set for it.
        val_split = val_split or final_cfg.train.val_split or DEFAULT_VAL_SPLIT
        retrain_cfgs = [load_config(final_config, [f"seed={r}", f"train.val_split={val_split}"])
                        for r in range(retrain_seeds)]
    if random_nonone is None:
        random_nonone = random if random_cells_can_hold_none(get_space(space_name)) else 0
    random_dir = random_dir or out
    out.mkdir(parents=True, exist_ok=True)
    cells = [Cell(f"search-seed{c.seed}", "searched", out / f"search-seed{c.seed}" / GENOTYPE, f"search-seed{c.seed}")
             for c in search_cfgs]
    for none_free, count in ((False, random), (True, random_nonone)):
        for path in write_random_genotypes(space_name, count, random_dir, none_free=none_free):
            cells.append(Cell(path.parent.name, "nonone" if none_free else "random", path))
    jobs = []
    for cell in cells:  # serial order: a search, then its cell's retrainings; then the random cells'
        run_dir = cell.genotype.parent
        if cell.search:
            jobs.append(Job(cell.search, "search", {"cfg": search_cfgs[cells.index(cell)], "out": run_dir}))
        after = (cell.search,) if cell.search else ()
        if benchmark is not None:
            jobs.append(Job(f"{cell.name}/{BENCHMARK}", BENCHMARK,
                            {"benchmark": str(benchmark), "genotype_path": cell.genotype}, after=after))
        for r, cfg in enumerate(retrain_cfgs):
            jobs.append(Job(f"{cell.name}/{RETRAIN}-seed{r}", "retrain",
                            {"cfg": cfg, "genotype_path": cell.genotype, "out": run_dir / f"{RETRAIN}-seed{r}"},
                            after=after))
    searches = tuple(c.search for c in cells if c.search)
    every_cell = {c.name: c.genotype for c in cells}
    for cfg, search in zip(search_cfgs, searches):  # each supernet scores every cell: after every search
        jobs.append(Job(f"{search}/supernet", "supernet", {"cfg": cfg, "run_dir": out / search, "cells": every_cell},
                        after=searches))
    return Plan(search_cfgs, retrain_cfgs, cells, jobs, val_split, None if benchmark is None else str(benchmark))


def _describe(job: Job, record: dict) -> str:
    if job.kind == "search":
        val = f" (val {record['val_acc']:.1f}%)" if record.get("val_acc") is not None else ""
        return f"search: {record['genotype']}{val}"
    if job.kind == "supernet":
        return f"supernet accuracy of {len(record)} cells"
    val = f"val {record['val_acc']:.2f}%  " if record.get("val_acc") is not None else ""
    return f"{val}test {record['test_acc']:.2f}%"


def run_experiment(search_config: str, final_config: str | None, seeds: int, random: int, out: Path,
                   overrides: list[str] = (), random_dir: Path | None = None,
                   say: Callable[[str], None] = _say, retrain_seeds: int = 3, random_nonone: int | None = None,
                   val_split: float | None = None, workers: int = 1, threads: int = 1,
                   command: str = "", benchmark: str | Path | None = None, first_seed: int = 0) -> dict:
    """Runs every job not yet finished and returns the results (also written to ``out``).

    Args:
        search_config: YAML of the search; ``overrides`` apply to it, ``seed`` is set per run.
        final_config: YAML of the retraining budget, the same for every architecture (None with
            ``benchmark``).
        seeds: Searches with seeds ``first_seed..first_seed+seeds-1``.
        random: Random cells (any op) to retrain.
        out: The experiment dir.
        overrides: ``key=value`` overrides of the search config.
        random_dir: Where the random cells' jobs live (default ``out``).
        say: Where the progress lines go.
        retrain_seeds: R: every cell is retrained with seeds ``0..R-1``.
        random_nonone: Random cells drawn without ``none`` (default: ``random`` where the
            space's random cells may hold ``none``, else 0).
        val_split: Part of the training set each retraining holds out for its val accuracy
            (default: the final config's ``train.val_split``, else ``DEFAULT_VAL_SPLIT``).
        workers: Jobs run at once, each in its own process.
        threads: Torch threads of each worker process.
        command: The command line, for the tables.
        benchmark: A NATS-Bench topology file (nb201 only): every cell is scored by lookup
            instead of retraining.
        first_seed: The first search seed (e.g. fresh seeds to confirm a choice made on others).
    """
    plan = plan_experiment(search_config, final_config, seeds, random, out, overrides, random_dir,
                           retrain_seeds, random_nonone, val_split, benchmark, first_seed)
    total, done, started = len(plan.jobs), 0, time.perf_counter()

    def report(job: Job, record: dict, skipped: bool, seconds: float) -> None:
        nonlocal done
        done += 1
        took = "finished earlier, skipped" if skipped else f"{seconds:.0f}s"
        say(f"[{done:>{len(str(total))}}/{total}] {job.id:<28} {_describe(job, record)}  {took}  "
            f"(elapsed {_clock(time.perf_counter() - started)})")

    records = run_jobs(plan.jobs, execute_job, workers=workers, threads=threads, on_done=report)
    results = gather(plan, records)
    results.update({
        "command": command, "search_config": str(search_config),
        "final_config": None if final_config is None else str(final_config),
        "benchmark": plan.benchmark, "metric": scores_metric(plan.benchmark),
        "overrides": list(overrides), "seeds": seeds, "first_seed": first_seed, "random": random,
        "random_nonone": sum(c.group == "nonone" for c in plan.cells), "retrain_seeds": len(plan.retrain_cfgs),
        "val_split": plan.val_split, "random_dir": str(random_dir or out),
        "wall_time_this_invocation": time.perf_counter() - started})
    write_results(results, out)
    return results


def scores_metric(benchmark: str | None) -> str:
    """What a cell's test score is: its accuracy after retraining, or the NB201 benchmark's."""
    if benchmark is None:
        return RETRAINED_METRIC
    from search_spaces.nb201_benchmark import METRIC_NAME

    return f"{METRIC_NAME} (%)"


def run_one_job(plan: Plan, job_id: str, say: Callable[[str], None] = _say) -> dict:
    """Runs the job ``job_id`` alone (``--only-job``) and returns its record; nothing is gathered."""
    jobs = {j.id: j for j in plan.jobs}
    if job_id not in jobs:
        raise UserError(f"--only-job {job_id!r} is not a job of this experiment (e.g. {plan.jobs[0].id!r}); "
                        "--print-jobs lists them")
    job = jobs[job_id]
    waiting = [a for a in job.after if not job_done(jobs[a])]
    if waiting:
        raise UserError(f"job {job_id!r} needs {waiting[0]!r} finished first; run that job, then this one")
    started = time.perf_counter()
    record, skipped = execute_job(job)
    took = "finished earlier, skipped" if skipped else f"{time.perf_counter() - started:.0f}s"
    say(f"{job.id}  {_describe(job, record)}  {took}")
    return record


def unfinished_jobs(plan: Plan) -> tuple[list[Job], list[Job]]:
    """``(ready, waiting)``: unfinished jobs that can start now, and those waiting for another job."""
    done = {j.id for j in plan.jobs if job_done(j)}
    todo = [j for j in plan.jobs if j.id not in done]
    ready = [j for j in todo if all(a in done for a in j.after)]
    return ready, [j for j in todo if j not in ready]


def _cell_entry(cell: Cell, runs: list[dict]) -> dict:
    val, test = [r["val_acc"] for r in runs], [r["test_acc"] for r in runs]
    return {"name": cell.name, "group": cell.group, "genotype": runs[0]["genotype"], "val_accs": val,
            "test_accs": test, "val_mean": statistics.fmean(val), "val_se": standard_error(val),
            "test_mean": statistics.fmean(test), "test_se": standard_error(test),
            "train_time": sum(r["train_time"] for r in runs)}


def gather(plan: Plan, records: dict[str, dict]) -> dict:
    """The results from every job's record: cells, groups, percentiles, retraining noise, Kendall's tau."""
    cells = []
    for cell in plan.cells:
        entry = _cell_entry(cell, [records[i] for i in plan.score_ids(cell)])
        if cell.search:
            search = records[cell.search]
            entry.update(seed=search["seed"], search_val_acc=search.get("val_acc"), search_time=search["search_time"])
        entry["supernet_val_acc"] = {c.search: records[f"{c.search}/supernet"][cell.name]["val_acc"]
                                     for c in plan.cells if c.search}
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
    reliability = {g: {split: reliability_of_means([c[f"{split}_accs"] for c in groups[g]]) for split in ("val", "test")}
                   for g in ("random", "nonone") if groups[g]}
    per_search = []
    for search in (c["name"] for c in groups["searched"]):
        believed = [c["supernet_val_acc"][search] for c in cells]
        per_search.append({"search": search, "cells": len(cells),
                           "tau_b": kendall_tau_b(believed, [c["val_mean"] for c in cells])})
    taus = [t["tau_b"] for t in per_search if t["tau_b"] is not None]
    return {"summary": summary, "percentiles": percentiles, "retraining_noise_se": noise,
            "reliability_of_cell_means": reliability, "kendall_tau": {"per_search": per_search, "mean": statistics.fmean(taus) if taus else None},
            "cells": cells,
            "job_time": sum(c["train_time"] + c.get("search_time", 0.0) for c in cells)}


# --------------------------------------------------------------------------- tables

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
                          f"cells: {_num(noise[split])}. Reliability of the cell means (ICC(1,k): the share of their "
                          "spread that is not retraining noise, the expected correlation with another "
                          f"{R} retrainings; 0 = a ranking by noise): " +
                      ", ".join(f"{GROUP_TITLES[g]} {_num(r[split])}"
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
              f"; mean {_num(tau['mean'], 3)} ({tau['per_search'][0]['cells']} cells).", "",
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
    p.add_argument("--final-config", help="YAML config of the retraining budget (required unless --benchmark)")
    p.add_argument("--benchmark", metavar="PATH", help="score every cell by lookup in the NATS-Bench topology "
                                                       "benchmark (nb201 only: NATS-tss-v1_0-3ffb9-simple) "
                                                       "instead of retraining it")
    p.add_argument("--seeds", type=int, default=2, help="searches, with seeds F..F+S-1 (default 2)")
    p.add_argument("--first-seed", type=int, default=0, metavar="F",
                   help="the first search seed (default 0); e.g. confirm a choice made on seeds 0..3 with --first-seed 4")
    p.add_argument("--random", type=int, default=8, help="random cells (any op) retrained (default 8)")
    p.add_argument("--random-nonone", type=int, default=None,
                   help="random cells drawn without 'none', a baseline of their own (default: as many as "
                        "--random where the space's random cells may hold 'none', else 0)")
    p.add_argument("--retrain-seeds", type=int, default=3, help="retrainings of every cell, seeds 0..R-1 (default 3)")
    p.add_argument("--val-split", type=float, default=None,
                   help="part of the training set each retraining holds out for its val accuracy (default: the "
                        f"final config's train.val_split, or {DEFAULT_VAL_SPLIT} where that is 0)")
    p.add_argument("--out", required=True, help="experiment dir; rerunning with the same dir resumes")
    p.add_argument("--random-dir", help="where the random cells' jobs live (default: --out); share it "
                                        "between experiments with the same final config")
    p.add_argument("--workers", type=int, default=1,
                   help="jobs run at once, each in its own process (default 1: one after another here)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads per job (default: 1 with one worker, as these small networks gain "
                        "little from more; the cores divided among the workers otherwise)")
    p.add_argument("--print-jobs", action="store_true",
                   help="print one self-contained shell command per unfinished job that can start now "
                        "(for a cluster scheduler) and exit; a later plain run gathers the results")
    p.add_argument("--only-job", metavar="ID", help="run this one job (an id --print-jobs shows) and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="search config overrides")
    return p


def _argv(args: argparse.Namespace) -> list[str]:
    """The options that define the experiment (what every job command repeats)."""
    argv = ["--search-config", args.search_config, "--seeds", str(args.seeds),
            "--random", str(args.random), "--retrain-seeds", str(args.retrain_seeds), "--out", args.out]
    if args.first_seed:
        argv += ["--first-seed", str(args.first_seed)]
    for flag, value in (("--final-config", args.final_config), ("--benchmark", args.benchmark),
                        ("--random-nonone", args.random_nonone), ("--val-split", args.val_split),
                        ("--random-dir", args.random_dir), ("--threads", args.threads)):
        if value is not None:
            argv += [flag, str(value)]
    return argv + list(args.overrides)


def run(args: argparse.Namespace) -> int:
    """The command: runs the experiment (or one job, or prints the jobs) and prints the markdown tables."""
    for flag, value, high in (("--threads", args.threads, 1024), ("--workers", args.workers, 1024),
                              ("--seeds", args.seeds, 1000), ("--random", args.random, 10_000),
                              ("--random-nonone", args.random_nonone, 10_000),
                              ("--retrain-seeds", args.retrain_seeds, 1000)):
        if value is not None and value > high:  # a process-long loop or pool: a huge value only exhausts the machine
            raise UserError(f"{flag} must be <= {high:,}, got {value}")
    for flag, value in (("--threads", args.threads), ("--workers", args.workers)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    if args.print_jobs and args.only_job:
        raise UserError("--print-jobs and --only-job exclude each other; use one")
    threads = args.threads or (1 if args.workers == 1 else threads_per_worker(args.workers))
    torch.set_num_threads(threads)
    out = Path(args.out)
    random_dir = Path(args.random_dir) if args.random_dir else None
    try:
        if args.print_jobs or args.only_job:
            plan = plan_experiment(args.search_config, args.final_config, args.seeds, args.random, out,
                                   args.overrides, random_dir, args.retrain_seeds, args.random_nonone, args.val_split,
                                   args.benchmark, args.first_seed)
            if args.only_job:
                run_one_job(plan, args.only_job)
                return 0
            ready, waiting = unfinished_jobs(plan)
            for job in ready:
                print(job_command(_argv(args), job.id))
            if waiting:
                print(f"{len(waiting)} more job(s) wait for these to finish: run --print-jobs again then",
                      file=sys.stderr)
            elif not ready:
                print("every job has finished: run the command without --print-jobs to gather the results",
                      file=sys.stderr)
            return 0
        command = shlex.join(["python", "-m", "nas.experiment", *_argv(args)])
        results = run_experiment(args.search_config, args.final_config, args.seeds, args.random, out,
                                 args.overrides, random_dir, retrain_seeds=args.retrain_seeds,
                                 random_nonone=args.random_nonone, val_split=args.val_split, workers=args.workers,
                                 threads=threads, command=command, benchmark=args.benchmark,
                                 first_seed=args.first_seed)
    except RunInterrupted as e:
        print(f"{e}; rerun the same command to continue", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to continue", file=sys.stderr)
        return 130
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
