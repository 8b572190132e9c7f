"""Runs that survive: mid-epoch resume, SIGKILL at random moments, SIGTERM, non-finite losses."""
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import search_spaces  # noqa: F401
from nas import UserError
from nas.cli.build import build_searcher
from nas.engine.checkpoint import load_checkpoint, save_checkpoint
from nas.config import build_config
from nas.engine.loop import RunDiverged
from resume_helpers import interrupt_then_resume

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.dataset=synthetic", "data.synthetic_size=96", "data.image_size=8", "data.batch_size=16",
        "model.C=4", "model.N=1", "search.epochs=3", "search.arch_lr=0.01", "seed=5", "deterministic=true"]
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def quiet(*_):
    pass


def strip_times(history):
    return [{k: v for k, v in m.items() if k != "epoch_time"} for m in history]


def assert_same_run(a_dir: Path, b_dir: Path):
    a, b = load_checkpoint(a_dir / "checkpoint.pt"), load_checkpoint(b_dir / "checkpoint.pt")
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert strip_times(a["metrics"]) == strip_times(b["metrics"])
    lines = lambda d: strip_times([json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()])
    assert lines(a_dir) == lines(b_dir)
    assert (a_dir / "genotype.yaml").read_text() == (b_dir / "genotype.yaml").read_text()


def test_resume_from_any_step_checkpoint_is_bit_exact(tmp_path):
    cfg = build_config({}, TINY + ["search.checkpoint_every=1"])
    (tmp_path / "full").mkdir()
    build_searcher(cfg, tmp_path / "full", log=quiet).run()
    steps_per_epoch = len(build_searcher(cfg, log=quiet).data.train)
    # Stop after an arbitrary step by requesting a stop from inside the loop, then resume.
    for cut in (1, steps_per_epoch - 1, steps_per_epoch + 2):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        second = interrupt_then_resume(cfg, d, cut, quiet)
        assert (second.epoch, second.step) == divmod(cut, steps_per_epoch)
        second.run()
        assert_same_run(tmp_path / "full", d)


def _cli(args, **kw):
    return subprocess.Popen([sys.executable, "train_search.py", *args], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def metrics_lines(d: Path) -> list[dict]:
    """metrics.jsonl line by line, as strict JSON (a bare NaN fails), epoch times left out."""
    def refuse(name):
        raise ValueError(f"non-JSON constant {name}")
    return strip_times([json.loads(line, parse_constant=refuse) for line in (d / "metrics.jsonl").read_text().splitlines()])


@pytest.mark.slow
def test_sigkill_at_random_moments_including_before_the_first_checkpoint_then_resume(tmp_path):
    """Kills a search at random moments from the opening of its run directory on, resumes it, and
    compares metrics.jsonl line by line (and weights, genotype) with an uninterrupted run."""
    args = TINY + ["search.epochs=3", "data.synthetic_size=160", "search.checkpoint_every=4", "search.report=false"]
    import train_search

    full = tmp_path / "full"
    started = time.time()
    assert train_search.main(["--out", str(full), *args]) == 0  # in-process: the same code, no interpreter start
    span = time.time() - started  # about the time from a run dir's opening to the end of the run
    expected = metrics_lines(full)
    assert [m["epoch"] for m in expected] == [1, 2, 3]

    rng = random.Random(0)
    delays = [0.0] + [rng.uniform(0.0, span) for _ in range(2)]  # the first kill lands before any checkpoint
    before_first = 0
    for trial, delay in enumerate(delays):
        d = tmp_path / f"kill{trial}"
        proc = _cli(["--out", str(d), *args])
        while not (d / "config.yaml").exists() and proc.poll() is None:
            time.sleep(0.001)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        had_checkpoint = (d / "checkpoint.pt").exists()
        before_first += not had_checkpoint
        if had_checkpoint:
            load_checkpoint(d / "checkpoint.pt")  # whatever moment it died, the checkpoint loads
        resumed = _cli(["--resume", str(d)])
        out, err = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, err
        assert ("starting it from the beginning" in out) == (not had_checkpoint), out
        assert not [p.name for p in d.iterdir() if p.name.endswith(".tmp")]  # a torn write is cleaned up
        assert metrics_lines(d) == expected, f"trial {trial} (killed {delay:.2f}s after the run dir opened)"
        assert_same_run(full, d)
    assert before_first >= 1  # the case a resume once appended to: no checkpoint yet


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_prints_how_to_resume(tmp_path):
    d = tmp_path / "run"
    proc = _cli(["--out", str(d), *TINY, "search.epochs=200"])
    deadline = time.time() + 120
    while not (d / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    mtime = (d / "checkpoint.pt").stat().st_mtime_ns
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert f"resume with: python train_search.py --resume {d}" in err
    assert "Traceback" not in err
    state = load_checkpoint(d / "checkpoint.pt")
    assert (d / "checkpoint.pt").stat().st_mtime_ns >= mtime
    assert state["epoch"] < 200
    resumed = _cli(["--resume", str(d), "search.epochs=200"])
    first_line = resumed.stdout.readline()  # printed once the handlers are in place
    assert first_line.startswith(f"resumed {d} at epoch")
    resumed.send_signal(signal.SIGINT)
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 130, err
    assert "Traceback" not in err


def test_nonfinite_loss_stops_naming_the_step_and_the_last_checkpoint(tmp_path):
    searcher = build_searcher(build_config({}, TINY), tmp_path, log=quiet)
    searcher.run(until_epoch=1)
    with torch.no_grad():
        searcher.supernet.classifier.weight[0, 0] = float("nan")
    with pytest.raises(RunDiverged) as info:
        searcher.run()
    message = str(info.value)
    assert "epoch 2, step 0" in message
    assert str(tmp_path / "checkpoint.pt") in message and "--resume" in message
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1  # the bad state was not saved


def test_nonfinite_steps_can_be_skipped_and_are_counted(tmp_path):
    """Skip mode: a step whose loss is not finite changes nothing and adds nothing to the epoch's sums.

    (Non-finite *weights* are not a step to skip: they stop the run, see test_run_dir.py.)
    """
    searcher = build_searcher(build_config({}, TINY + ["search.on_nonfinite=skip"]), tmp_path, log=quiet)
    calls = {"n": 0}

    def poison_first_steps(module, inputs, output):  # the first 3 forward passes (weight, arch, weight)
        calls["n"] += 1
        return output * float("nan") if calls["n"] <= 3 else output

    handle = searcher.supernet.classifier.register_forward_hook(poison_first_steps)
    before = {k: v.clone() for k, v in searcher.supernet.state_dict().items()}
    fifth = {}

    def before_fifth_pass(module, inputs):  # the state after two iterations, each with a skipped step
        fifth["n"] = fifth.get("n", 0) + 1
        if fifth["n"] == 5:
            fifth["state"] = {k: v.clone() for k, v in searcher.supernet.state_dict().items()}

    pre = searcher.supernet.stem.register_forward_pre_hook(before_fifth_pass)
    m = searcher.run(until_epoch=1)
    handle.remove()
    pre.remove()
    assert m["skipped_steps"] == 3
    # The 4th pass, an arch step, moved the logits; its BN running statistics are rolled back with the
    # iteration, whose weight step was skipped. Weights and running statistics are as they started.
    weights = [k for k in before if not k.startswith("architecture.")]
    changed = [k for k in weights if not torch.equal(before[k], fifth["state"][k])]
    assert not changed, changed
    line = json.loads((tmp_path / "metrics.jsonl").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert math.isfinite(line["train_loss"]) and math.isfinite(line["arch_loss"])


def test_checkpoint_written_atomically_and_corrupt_ones_are_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "epoch": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary left behind
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(UserError, match="corrupt or unreadable"):
        load_checkpoint(path)


def test_checkpoint_loading_never_runs_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "epoch": 0, "x": Evil()}, path)
    with pytest.raises(UserError):
        load_checkpoint(path)
    assert not marker.exists()
