"""The experiment's job machinery (nas/jobs.py): order, threads per worker, printed commands."""
from __future__ import annotations

import shlex
import sys

import pytest

from nas.experiment.jobs import Job, job_command, run_jobs, threads_per_worker


def _record(job: Job) -> tuple[str, bool]:
    return f"ran {job.id}", job.kind == "done"


def test_serial_jobs_run_in_list_order_and_report_each():
    jobs = [Job("a", "work", {}), Job("a/b", "done", {}, after=("a",)), Job("c", "work", {})]
    seen = []
    results = run_jobs(jobs, _record, on_done=lambda job, result, skipped, _: seen.append((job.id, result, skipped)))
    assert results == {"a": "ran a", "a/b": "ran a/b", "c": "ran c"}
    assert seen == [("a", "ran a", False), ("a/b", "ran a/b", True), ("c", "ran c", False)]


def test_a_job_listed_before_what_it_waits_for_is_refused():
    with pytest.raises(ValueError, match="b waits for a"):
        run_jobs([Job("b", "work", {}, after=("a",)), Job("a", "work", {})], _record)


def test_threads_are_divided_among_workers():
    assert threads_per_worker(1, cores=8) == 8
    assert threads_per_worker(3, cores=8) == 2
    assert threads_per_worker(16, cores=8) == 1


def test_a_job_command_quotes_paths_and_round_trips(tmp_path):
    folder = tmp_path / "a dir"
    argv = ["--out", str(folder / "exp it"), "search.derive_exclude=[none]"]
    line = job_command(argv, "random-0/retrain-seed1", cwd=folder)
    words = shlex.split(line)
    assert words[:3] == ["cd", str(folder.resolve()), "&&"]
    assert words[3:] == [sys.executable, "-m", "nas.experiment", *argv, "--only-job", "random-0/retrain-seed1"]


def test_a_stopped_run_crosses_a_process_boundary():
    import pickle

    from nas.engine.loop import RunInterrupted
    again = pickle.loads(pickle.dumps(RunInterrupted(15, 2, 7)))
    assert (again.signum, again.epoch, again.step, str(again)) == (15, 2, 7, "stopped by signal 15 at epoch 3, step 7")
