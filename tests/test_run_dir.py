"""The run directory's guarantees: its history, its lock, what is checkpointed and what a resume accepts."""
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import search_spaces  # noqa: F401
from nas import UserError
from nas.cli.build import build_searcher
from nas.engine.checkpoint import load_checkpoint, save_checkpoint
from nas.cli.run_command import LOCK, lock_run_dir, open_run_dir
from nas.config import build_config
from nas.engine.loop import CHECKPOINT, METRICS, RunDiverged, RunWriteFailed

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.dataset=synthetic", "data.synthetic_size=96", "data.image_size=8", "data.batch_size=16",
        "model.C=4", "model.N=1", "search.epochs=2", "search.arch_lr=0.01", "seed=5", "deterministic=true",
        "search.report=false"]
# One weight step per epoch (16 training images), so an epoch's last update is its only one.
ONE_STEP = ["data.synthetic_size=32"]
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def quiet(*_):
    pass


def strict_lines(path: Path) -> list[dict]:
    """metrics.jsonl parsed as strict JSON (a bare NaN or Infinity fails)."""
    def refuse(name):
        raise ValueError(f"non-JSON constant {name}")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def new_run(tmp: Path, overrides=(), name="run"):
    cfg = build_config({}, [*TINY, *overrides])
    out = tmp / name
    open_run_dir(out, cfg, resume=False)
    return cfg, out, build_searcher(cfg, out, log=quiet)


# --------------------------------------------------------------------------- history

def test_a_new_run_starts_a_clean_history_and_removes_torn_writes(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / METRICS).write_text('{"epoch": 1}\n{"epoch": 2}\n')  # an earlier run killed before its checkpoint
    torn = out / ".checkpoint.pt.abc123.tmp"
    torn.write_bytes(b"PK\x03\x04 torn")
    cfg, out, searcher = new_run(tmp_path)
    assert not torn.exists() and not (out / METRICS).exists()
    searcher.run()
    assert [m["epoch"] for m in strict_lines(out / METRICS)] == [1, 2]
    assert [m["epoch"] for m in strict_lines(out / METRICS)] == [m["epoch"] for m in searcher.history]


def test_a_failed_checkpoint_write_takes_its_metrics_line_back(tmp_path, monkeypatch):
    """Disk full while checkpointing epoch 2: one line naming the file, epoch 1's checkpoint and history stay."""
    import nas.engine.loop

    cfg, out, searcher = new_run(tmp_path)
    real = nas.engine.loop.save_checkpoint
    calls = {"n": 0}

    def full_disk(path, state):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, state)

    monkeypatch.setattr(nas.engine.loop, "save_checkpoint", full_disk)
    with pytest.raises(RunWriteFailed) as info:
        searcher.run()
    message = str(info.value)
    assert isinstance(info.value, UserError) and "\n" not in message
    assert str(out / CHECKPOINT) in message and "No space left on device" in message and "intact" in message
    assert load_checkpoint(out / CHECKPOINT)["epoch"] == 1
    assert [m["epoch"] for m in strict_lines(out / METRICS)] == [1]
    assert not list(out.glob(".*.tmp"))


@pytest.mark.slow
def test_file_size_limit_before_the_first_checkpoint_then_resume_gives_one_history(tmp_path):
    """RLIMIT_FSIZE makes the first checkpoint fail (EFBIG): one line, nothing torn; --resume starts over cleanly."""
    import resource

    out = tmp_path / "run"
    args = [sys.executable, "train_search.py", "--out", str(out), *TINY]

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))  # config and metrics fit, a checkpoint not

    p = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600, preexec_fn=limit)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("error: cannot write ") and p.stderr.count("\n") == 1, p.stderr
    assert str(out / CHECKPOINT) in p.stderr and "no checkpoint was written yet" in p.stderr
    assert not (out / CHECKPOINT).exists() and not list(out.glob(".*.tmp"))
    assert not (out / METRICS).exists() or (out / METRICS).read_text() == ""
    p = subprocess.run([sys.executable, "train_search.py", "--resume", str(out)], cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "starting it from the beginning" in p.stdout
    assert [m["epoch"] for m in strict_lines(out / METRICS)] == [1, 2]


# --------------------------------------------------------------------------- lock

def test_a_second_run_in_a_locked_directory_is_refused_naming_the_holder(tmp_path):
    cfg, out, _ = new_run(tmp_path)  # this process now holds the run's lock
    assert (out / LOCK).read_text().strip() == str(os.getpid())
    other = [sys.executable, "-c", "import sys; from pathlib import Path; from nas.cli.run_command import lock_run_dir; "
             "from nas.utils.errors import UserError\ntry:\n    lock_run_dir(Path(sys.argv[1]))\n"
             "except UserError as e:\n    print(e); sys.exit(2)", str(out)]
    p = subprocess.run(other, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    assert str(out) in p.stdout and f"pid {os.getpid()}" in p.stdout and "in use" in p.stdout
    lock_run_dir(out)  # taking it again in the holder is a no-op, not a conflict


@pytest.mark.slow
@pytest.mark.parametrize("how", ["--out", "--resume"])
def test_cli_into_a_running_directory_is_one_line_exit_2(tmp_path, how):
    cfg, out, _ = new_run(tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name != LOCK}
    p = subprocess.run([sys.executable, "train_search.py", how, str(out), *(TINY if how == "--out" else [])],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("error: ") and p.stderr.count("\n") == 1, p.stderr
    assert f"pid {os.getpid()}" in p.stderr and str(out) in p.stderr and p.stdout == ""
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != LOCK} == before


# --------------------------------------------------------------------------- non-finite

@pytest.mark.parametrize("overrides, what, key", [
    # warm-up only: the one weight update of epoch 1 overflows after its finiteness check (caught at the
    # epoch's end in the weights and running statistics, before the evaluation's val_loss would show it)
    (ONE_STEP + ["search.warmup_epochs=2", "search.lr=1e36", "search.grad_clip=0"], "weights (",
     "search.lr (1e+36)"),
    # a huge weight lr poisons the arch step's loss: still the weights' learning rate
    (["search.lr=1e30", "search.grad_clip=0"], "loss or gradient", "search.lr (1e+30)"),
    # a huge arch lr drives the logits to inf: the arch learning rate
    (["search.arch_lr=1e30"], "loss or gradient", "search.arch_lr (1e+30)"),
])
def test_divergence_names_what_and_the_key_to_blame_and_checkpoints_nothing_bad(tmp_path, overrides, what, key):
    cfg, out, searcher = new_run(tmp_path, overrides)
    with pytest.raises(RunDiverged) as info:
        searcher.run()
    message = str(info.value)
    assert f"non-finite {what}" in message and f"lower {key}" in message, message
    if (out / CHECKPOINT).exists():  # whatever was checkpointed is finite and matches metrics.jsonl
        state = load_checkpoint(out / CHECKPOINT)
        assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
        assert strict_lines(out / METRICS) == state["metrics"]
    else:
        assert not (out / METRICS).exists()


def test_weights_that_overflow_mid_epoch_are_never_checkpointed(tmp_path):
    cfg, out, searcher = new_run(tmp_path, ["search.checkpoint_every=1", "search.warmup_epochs=2"])  # no arch step
    real = searcher.weight_opt.step
    calls = {"n": 0}

    def overflowing_step(*a, **k):  # the update itself overflows; its gradients were finite
        real(*a, **k)
        calls["n"] += 1
        if calls["n"] == 2:
            with torch.no_grad():
                searcher.supernet.classifier.weight.mul_(float("inf"))

    searcher.weight_opt.step = overflowing_step
    with pytest.raises(RunDiverged) as info:
        searcher.run()
    assert "non-finite weights (classifier.weight) at epoch 1, step 1" in str(info.value)
    assert "lower search.lr" in str(info.value)
    state = load_checkpoint(out / CHECKPOINT)
    assert (state["epoch"], state["step"]) == (0, 1)  # the step before, which was finite
    assert torch.isfinite(state["model"]["classifier.weight"]).all()


def test_final_training_divergence_names_the_first_bad_step(tmp_path):
    from nas.engine.train import FinalTrainer
    from nas.data import TensorLoader, make_synthetic

    train = TensorLoader(make_synthetic(64, 4, 8), 16, shuffle=True)
    test = TensorLoader(make_synthetic(32, 4, 8, train=False), 32, shuffle=False, drop_last=False)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    trainer = FinalTrainer(net, train, test, build_config({}, ["train.epochs=2", "train.progress=false"]).train,
                           log=quiet)
    real = trainer.optimizer.step
    calls = {"n": 0}

    def poisoned(*a, **k):
        real(*a, **k)
        calls["n"] += 1
        if calls["n"] == 2:  # after step 1: step 2's loss is the first non-finite one
            with torch.no_grad():
                net[1].bias.fill_(float("nan"))

    trainer.optimizer.step = poisoned
    with pytest.raises(RunDiverged, match=r"non-finite loss or gradient at epoch 1, step 2; .*lower train\.lr \(0\.1\)"):
        trainer.run()


# --------------------------------------------------------------------------- what a resume accepts

@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finished")
    cfg, out, searcher = new_run(tmp, ["search.epochs=3"])
    searcher.run(until_epoch=1)
    return cfg, out


def _set(state, path, value):
    *parents, last = path.split(".", 1) if path.startswith("model.") else path.split(".")
    for p in parents:
        state = state[p]
    state[last] = value


BAD_CHECKPOINTS = {
    "negative epoch": ("epoch", -1, "'epoch' must be an integer in [0, 3], got -1"),
    "epoch as text": ("epoch", "x", "'epoch' must be an integer in [0, 3], got 'x'"),
    "epoch beyond the run": ("epoch", 4, "'epoch' must be an integer"),
    "step as a float": ("step", 1e9, "'step' must be an integer in [0, 2], got 1000000000.0"),
    "step beyond the epoch": ("step", 10**9, "'step' must be an integer in [0, 2]"),
    "python rng as a number": ("rng.python", 5, "does not fit this model or is damaged"),
    "metrics not a list": ("metrics", None, "'metrics' must be 1 finite epoch records"),
    "non-finite partial sums": ("partial", {"loss": float("nan")}, "'partial' must be a mapping of finite numbers"),
    "another seed": ("config.seed", 6, "another config (seed differ)"),
    "another learning rate": ("config.search.lr", 0.5, "another config (search.lr differ)"),
    "another batch size": ("config.data.batch_size", 8, "another config (data.batch_size differ)"),
    "no config recorded": ("config", None, "does not record the config"),
    "non-finite weights": ("model.classifier.bias", torch.tensor([float("nan")] * 4), "non-finite weights"),
}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_a_checkpoint_that_does_not_fit_the_run_is_one_line(finished, tmp_path, case):
    cfg, out = finished
    field, value, expected = BAD_CHECKPOINTS[case]
    state = load_checkpoint(out / CHECKPOINT)
    _set(state, field, value)
    path = tmp_path / CHECKPOINT
    save_checkpoint(path, state)
    searcher = build_searcher(cfg, log=quiet)
    with pytest.raises(UserError) as info:
        searcher.resume(path)
    assert expected in str(info.value) and "\n" not in str(info.value) and len(str(info.value)) < 400


def test_the_checkpoint_records_the_resolved_config_and_resumes_under_it(finished):
    cfg, out = finished
    state = load_checkpoint(out / CHECKPOINT)
    assert state["config"] == cfg.to_dict()
    searcher = build_searcher(cfg, log=quiet)
    searcher.resume(out / CHECKPOINT)
    assert (searcher.epoch, searcher.step) == (1, 0)


# --------------------------------------------------------------------------- interrupt at the end

def test_sigint_during_the_report_says_the_search_finished(tmp_path, monkeypatch, capsys):
    import nas.report.report
    import train_search

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(nas.report.report, "try_write_report", interrupted)
    out = tmp_path / "run"
    overrides = [o for o in TINY if o != "search.report=false"] + ["search.progress=false"]
    assert train_search.main(["--out", str(out), *overrides]) == 130
    err = capsys.readouterr().err
    assert "before training started" not in err
    assert "the search finished" in err and f"python -m nas.report {out}" in err
    assert (out / "genotype.yaml").is_file() and load_checkpoint(out / CHECKPOINT)["epoch"] == 2


def test_no_stray_warnings_when_refusing_a_pickle_or_scheduling_one_epoch(tmp_path, caplog):
    import warnings

    from nas.engine.loop import cosine_scheduler

    import pickle

    path = tmp_path / "raw.pt"
    path.write_bytes(pickle.dumps({"model": {}, "epoch": 0}))  # a raw pickle, not torch.save's zip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning would fail the load instead of the one-line error
        with pytest.raises(UserError, match="corrupt or unreadable"):
            load_checkpoint(path)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with caplog.at_level("DEBUG"):
        scheduler = cosine_scheduler(optimizer, 1, 0.0)
    assert not [r for r in caplog.records if r.levelno >= 30]
    scheduler.step(0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)  # the one epoch runs at the initial lr
