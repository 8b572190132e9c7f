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

The experiment's parts: ``plan`` (cells and jobs), ``cell_jobs`` (what each job
does), ``jobs`` (running them, in parallel or printed for a scheduler),
``results`` and ``rank_stats`` (the numbers and tables); this module runs them
and is the command line.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from ..cli.run_command import guarded_main
from ..engine.loop import RunDiverged, RunInterrupted
from ..utils.errors import UserError
from .cell_jobs import execute_job, job_done
from .jobs import Job, job_command, run_jobs, threads_per_worker
from .plan import DEFAULT_VAL_SPLIT, Plan, plan_experiment, unfinished_jobs
from .results import RESULTS_JSON, RESULTS_MD, clock, format_markdown, gather, scores_metric, write_results


def _say(line: str) -> None:
    print(line, flush=True)  # progress must show when stdout is a file (nohup), not only at exit


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
            f"(elapsed {clock(time.perf_counter() - started)})")

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
