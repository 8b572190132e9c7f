"""An experiment's jobs: the job list, running it on worker processes, and one shell command per job.

A job is one process-sized piece of work (a search, one retraining, one
supernet scoring) with its own directory; it knows which jobs must finish
before it starts. ``run_jobs`` runs them in list order on this process, or on
a pool of spawned processes (one job per process at a time, the CPU threads
divided among them); ``job_command`` is the shell line that runs one job alone,
for a cluster scheduler.
"""
from __future__ import annotations

import os
import shlex
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

import torch


@dataclass(frozen=True)
class Job:
    """One unit of work.

    Attributes:
        id: Unique and path-like (``search-seed0/retrain-seed1``); ``--only-job`` takes it.
        kind: Which function runs it (the experiment's table of kinds).
        spec: What that function needs (picklable: configs, paths).
        after: Ids of the jobs that must finish first.
    """

    id: str
    kind: str
    spec: dict = field(compare=False)
    after: tuple[str, ...] = ()


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """``max(1, cores // workers)``: the machine's threads shared by the workers."""
    return max(1, (cores or available_cores()) // workers)


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _timed(execute: Callable[[Job], tuple[Any, bool]], job: Job) -> tuple[Any, bool, float]:
    started = time.perf_counter()
    result, skipped = execute(job)
    return result, skipped, time.perf_counter() - started


def run_jobs(jobs: list[Job], execute: Callable[[Job], tuple[Any, bool]], workers: int = 1, threads: int = 1,
             on_done: Callable[[Job, Any, bool, float], None] = lambda *a: None) -> dict[str, Any]:
    """Runs every job once its ``after`` jobs have finished; returns ``{id: result}``.

    Args:
        jobs: In an order where each job comes after those it waits for (the serial order).
        execute: ``job -> (result, skipped)``; a module-level function (it is pickled for the workers).
        workers: 1 runs the jobs here, in list order; N > 1 runs up to N at once, each in a spawned process.
        threads: Torch CPU threads of each worker process (workers > 1).
        on_done: Called here as ``(job, result, skipped, seconds)`` as each job finishes.

    Raises:
        ValueError: a job waits for one that is not before it in the list.
        Exception: the first error of a job, once the jobs already running have finished
            (their results are on disk; nothing new is started).
    """
    seen: set[str] = set()
    for job in jobs:
        missing = [a for a in job.after if a not in seen]
        if missing:
            raise ValueError(f"job {job.id} waits for {missing[0]}, which is not before it")
        seen.add(job.id)
    results: dict[str, Any] = {}
    if workers <= 1:
        for job in jobs:
            result, skipped, seconds = _timed(execute, job)
            results[job.id] = result
            on_done(job, result, skipped, seconds)
        return results
    pending = list(jobs)
    running: dict[Future, Job] = {}
    error: BaseException | None = None
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                             initializer=_init_worker, initargs=(threads,)) as pool:
        try:
            while pending or running:
                if error is None:
                    for job in [j for j in pending if all(a in results for a in j.after)][:workers - len(running)]:
                        pending.remove(job)
                        running[pool.submit(_timed, execute, job)] = job
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    job = running.pop(future)
                    try:
                        result, skipped, seconds = future.result()
                    except BaseException as e:  # noqa: BLE001  (re-raised below, after the running jobs)
                        error = error or e
                        continue
                    results[job.id] = result
                    on_done(job, result, skipped, seconds)
        except KeyboardInterrupt:
            pool.shutdown(wait=True, cancel_futures=True)  # the workers got the signal too: they checkpoint and stop
            raise
    if error is not None:
        raise error
    return results


def job_command(argv: list[str], job_id: str, cwd: str | Path | None = None) -> str:
    """The shell line that runs one job: ``cd CWD && PYTHON -m nas.experiment ARGV --only-job ID``."""
    cwd = Path(cwd or os.getcwd()).resolve()
    command = [sys.executable, "-m", "nas.experiment", *argv, "--only-job", job_id]
    return f"cd {shlex.quote(str(cwd))} && {shlex.join(command)}"
