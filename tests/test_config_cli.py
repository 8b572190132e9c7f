"""Tests of nas/config.py and of the train_search.py command line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

from nas.config import Config, build_config, diff_configs, load_config, parse_override, read_yaml
from nas.utils.errors import UserError
from nas.utils.yamlio import flatten

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


# --------------------------------------------------------------------------- loading

def test_defaults():
    cfg = load_config()
    assert cfg == Config()
    assert cfg.seed == 0 and cfg.device == "auto"
    assert cfg.data.dataset == "digits" and cfg.data.split == 0.5 and cfg.data.batch_size == 64
    assert cfg.model.space == "nb201" and cfg.model.mode == "gdas"
    assert cfg.search.epochs == 250 and cfg.search.tau_max == 10.0 and cfg.search.tau_min == 0.1
    assert cfg.search.arch_betas == [0.5, 0.999]
    assert Config().search.arch_betas is not cfg.search.arch_betas  # no shared mutable default


def test_configs_folder_is_not_empty():
    assert REPO / "configs" / "quickstart.yaml" in CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    written = flatten(yaml.safe_load(path.read_text()) or {})
    loaded = flatten(cfg.to_dict())
    for key, value in written.items():
        assert loaded[key] == value, key
    assert build_config(cfg.to_dict()) == cfg


def test_to_dict_round_trips_through_yaml(tmp_path):
    cfg = load_config(overrides=["search.lr=0.2", "search.arch_betas=[0.1, 0.2]", "data.root=/some/where",
                                 "search.arch_weight_decay=0.00001"])
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    assert load_config(path) == cfg


def test_empty_yaml_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n")
    assert load_config(path) == Config()


def test_file_values_and_overrides_combine(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 3\nsearch:\n  epochs: 7\n  lr: 0.5\n")
    cfg = load_config(path, ["search.epochs=9", "search.epochs=11"])
    assert cfg.seed == 3 and cfg.search.lr == 0.5
    assert cfg.search.epochs == 11  # the last override wins over the file and earlier overrides
    assert cfg.search.lr_min == Config().search.lr_min  # untouched keys keep their defaults


# --------------------------------------------------------------------------- overrides

@pytest.mark.parametrize("text, key, value", [
    ("search.epochs=5", "search.epochs", 5),
    ("seed=42", "seed", 42),
    ("search.lr=0.1", "search.lr", 0.1),
    ("search.lr=1", "search.lr", 1.0),                 # an int is fine for a float key
    ("search.tau_min=1.0e-2", "search.tau_min", 0.01),
    ("data.augment=false", "data.augment", False),
    ("search.bilevel=False", "search.bilevel", False),
    ("data.download=true", "data.download", True),
    ("search.arch_betas=[0.1, 0.2]", "search.arch_betas", [0.1, 0.2]),
    ("search.arch_betas=[0, 0.5]", "search.arch_betas", [0, 0.5]),
    ("model.mode=snas", "model.mode", "snas"),
    ("data.root=/tmp/some dir", "data.root", "/tmp/some dir"),
    ("device = cpu", "device", "cpu"),
])
def test_override_values_are_yaml_typed(text, key, value):
    cfg = load_config(overrides=[text])
    got = flatten(cfg.to_dict())[key]
    assert got == value and type(got) is type(value)
    assert diff_configs(Config(), cfg) == ([key] if value != flatten(Config().to_dict())[key] else [])


@pytest.mark.parametrize("text, value", [("search.arch_lr=3e-4", 3e-4), ("search.lr=1E-2", 0.01),
                                         ("search.weight_decay=5e-4", 5e-4)])
def test_override_accepts_exponent_floats(text, value):
    """``3e-4`` is how people write learning rates; YAML 1.1 (PyYAML) reads it as a string."""
    cfg = load_config(overrides=[text])
    key = text.split("=")[0]
    assert flatten(cfg.to_dict())[key] == pytest.approx(value)


def test_parse_override():
    assert parse_override("a.b=1") == ("a.b", 1)
    assert parse_override("a=x=y") == ("a", "x=y")
    assert parse_override("a=") == ("a", "")
    assert parse_override("a=[1, 2]") == ("a", [1, 2])


# --------------------------------------------------------------------------- errors

def _error(overrides=(), values=None) -> str:
    with pytest.raises(UserError) as e:
        build_config(values, overrides)
    return str(e.value)


@pytest.mark.parametrize("override, named, hint", [
    ("search.epoch=3", "search.epoch", "search.epochs"),
    ("data.batchsize=3", "data.batchsize", "data.batch_size"),
    ("sead=1", "sead", "seed"),
    ("serch.epochs=3", "serch", "search"),  # a misspelt section is named as such
    ("model.moed=gdas", "model.moed", "model.mode"),
])
def test_unknown_key_suggests_closest(override, named, hint):
    msg = _error([override])
    assert f"unknown config key {named!r}" in msg
    assert f"did you mean {hint!r}" in msg


def test_unknown_key_without_close_match_has_no_hint():
    msg = _error(["search.zzzzqqq=1"])
    assert "'search.zzzzqqq'" in msg and "did you mean" not in msg


def test_unknown_key_in_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("search:\n  epoch: 3\n")
    with pytest.raises(UserError, match=r"search\.epoch.*did you mean 'search\.epochs'"):
        load_config(path)


@pytest.mark.parametrize("override, key, what", [
    ("search.epochs=abc", "search.epochs", "integer"),
    ("search.epochs=2.5", "search.epochs", "integer"),   # float for int
    ("search.epochs=3.0", "search.epochs", "integer"),
    ("search.epochs=true", "search.epochs", "integer"),  # bool is not an int
    ("search.lr=fast", "search.lr", "number"),           # string for a number
    ("search.lr=true", "search.lr", "number"),
    ("search.lr=null", "search.lr", "number"),
    ("search.lr=", "search.lr", "number"),
    ("data.augment=1", "data.augment", "true or false"),  # int for bool
    ("data.augment=yes please", "data.augment", "true or false"),
    ("model.mode=1", "model.mode", "string"),
    ("search.arch_betas=0.5", "search.arch_betas", "list"),
    ("search={epochs: 3}", None, None),  # a valid section mapping (control case)
    ("search=3", "search", "mapping"),
])
def test_wrong_type_names_key(override, key, what):
    if key is None:
        assert load_config(overrides=[override]).search.epochs == 3
        return
    msg = _error([override])
    assert repr(key) in msg and what in msg


@pytest.mark.parametrize("overrides, key", [
    (["search.tau_max=0"], "search.tau_max"),
    (["search.tau_min=0"], "search.tau_min"),
    (["search.tau_min=5", "search.tau_max=1"], "search.tau_min"),
    (["search.epochs=0"], "search.epochs"),
    (["search.epochs=-3"], "search.epochs"),
    (["data.split=0"], "data.split"),
    (["data.split=1"], "data.split"),
    (["data.split=1.5"], "data.split"),
    (["data.split=-0.2"], "data.split"),
    (["data.batch_size=0"], "data.batch_size"),
    (["search.lr=-0.1"], "search.lr"),
    (["search.arch_lr=-1"], "search.arch_lr"),
    (["search.weight_decay=-0.0001"], "search.weight_decay"),
    (["search.lr=0.01", "search.lr_min=0.1"], "search.lr_min"),
    (["search.warmup_epochs=-1"], "search.warmup_epochs"),
    (["search.arch_betas=[0.5]"], "search.arch_betas"),
    (["search.arch_betas=[0.5, 1.0]"], "search.arch_betas"),
    (["model.C=0"], "model.C"),
    (["model.N=0"], "model.N"),
    (["data.image_size=2"], "data.image_size"),
    (["search.eval_every=-1"], "search.eval_every"),
    (["search.checkpoint_every=-1"], "search.checkpoint_every"),
])
def test_out_of_range_names_key(overrides, key):
    msg = _error(overrides)
    assert repr(key) in msg


@pytest.mark.parametrize("override, key", [
    ("model.mode=enas", "model.mode"),
    ("data.dataset=mnist", "data.dataset"),
    ("search.tau_schedule=step", "search.tau_schedule"),
    ("device=tpu", "device"),
    ("search.on_nonfinite=ignore", "search.on_nonfinite"),
])
def test_unknown_choice_names_key_and_value(override, key):
    msg = _error([override])
    assert repr(key) in msg and repr(override.split("=")[1]) in msg


@pytest.mark.parametrize("value", ["gdas", "snas", "darts"])
def test_known_modes_are_accepted(value):
    assert load_config(overrides=[f"model.mode={value}"]).model.mode == value


@pytest.mark.parametrize("value", ["linear", "exponential", "cosine", "constant"])
def test_known_tau_schedules_are_accepted(value):
    assert load_config(overrides=[f"search.tau_schedule={value}"]).search.tau_schedule == value


def test_yaml_syntax_error_gives_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("seed: 0\ndata:\n  dataset: digits\n batch_size: 3\n")
    with pytest.raises(UserError) as e:
        load_config(path)
    msg = str(e.value)
    assert "line 4" in msg and str(path) in msg
    assert "\n" not in msg


def test_yaml_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        load_config(path)


def test_missing_config_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(UserError) as e:
        load_config(path)
    assert str(path) in str(e.value)
    with pytest.raises(UserError):
        read_yaml(tmp_path)  # a folder is not a config file


def test_override_without_equals():
    msg = _error(["search.epochs"])
    assert "'search.epochs'" in msg and "key=value" in msg


def test_diff_configs():
    a = load_config()
    b = load_config(overrides=["search.epochs=3", "data.batch_size=8", "search.arch_betas=[0.1, 0.2]"])
    assert diff_configs(a, b) == ["data.batch_size", "search.arch_betas", "search.epochs"]
    assert diff_configs(b, a) == ["data.batch_size", "search.arch_betas", "search.epochs"]
    assert diff_configs(a, load_config()) == []
    assert diff_configs(a, load_config(overrides=["search.lr=0.025"])) == []  # same value, written differently


# --------------------------------------------------------------------------- CLI

ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
TINY = ["data.dataset=synthetic", "data.synthetic_size=64", "data.image_size=8", "model.C=4", "model.N=1",
        "search.epochs=2", "data.batch_size=16"]
METRIC_KEYS = {"epoch", "tau", "train_loss", "train_acc", "arch_loss", "arch_acc", "val_acc", "genotype",
               "probabilities", "entropy", "epoch_time"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train_search.py", *map(str, args)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)


def _assert_one_line_error(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout
    assert p.stderr.startswith("error: "), p.stderr
    assert p.stderr.count("\n") == 1 and p.stderr.endswith("\n"), p.stderr
    return p.stderr


def _snapshot(folder: Path) -> dict[str, bytes]:
    """The files of a folder; the run lock (which records the pid of the last run to take it) aside."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One tiny search through the CLI; returns (run dir, process, file contents right after)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    p = _cli("--out", out, *TINY)
    assert p.returncode == 0, p.stderr
    return out, p, _snapshot(out)


def test_cli_run_files(finished_run):
    out, p, files = finished_run
    assert set(files) == {"config.yaml", "metrics.jsonl", "genotype.yaml", "checkpoint.pt"}  # no temp files left
    assert (out / ".lock").is_file()  # the run's lock file stays (deleting it would race a second run)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["report"]
    assert (out / "report" / "curves.png").stat().st_size > 0  # the end-of-search report
    assert "Traceback" not in p.stderr
    assert str(out / "genotype.yaml") in p.stdout


def test_cli_run_config_round_trips(finished_run):
    out, _, _ = finished_run
    assert load_config(out / "config.yaml") == load_config(REPO / "configs" / "quickstart.yaml", TINY)


def test_cli_run_metrics(finished_run):
    out, _, _ = finished_run
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert METRIC_KEYS <= set(r), METRIC_KEYS - set(r)
        assert 0.0 <= r["train_acc"] <= 100.0 and 0.0 <= r["arch_acc"] <= 100.0 and 0.0 <= r["val_acc"] <= 100.0
        assert r["train_loss"] > 0 and r["arch_loss"] > 0 and r["epoch_time"] > 0
        cell = r["probabilities"]["cell"]
        assert len(cell) == 6 and all(len(row) == 5 and abs(sum(row) - 1) < 1e-3 for row in cell)
        assert len(r["entropy"]["cell"]) == 6
    # Linear tau schedule of quickstart: tau_max on the first epoch, tau_min on the last.
    assert records[0]["tau"] == pytest.approx(10.0) and records[1]["tau"] == pytest.approx(0.1)


def test_cli_run_genotype(finished_run):
    import search_spaces  # noqa: F401  (registers nb201)
    from nas.spaces.genotype import load_genotype

    out, _, _ = finished_run
    space, genotype = load_genotype(out / "genotype.yaml")
    assert space.name == "nb201"
    assert load_genotype(out / "genotype.yaml", space="nb201")[1] == genotype
    text = space.format(genotype)
    assert space.parse(text) == genotype
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert text == last["genotype"]


def test_cli_run_checkpoint(finished_run):
    out, _, _ = finished_run
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 2
    logits = state["model"]["architecture.logits.cell"]
    assert logits.shape == (6, 5) and logits.dtype == torch.float32
    assert len(state["metrics"]) == 2


def _bad_cases(tmp: Path, run_dir: Path) -> dict[str, tuple[list, list[str], Path]]:
    """id -> (CLI args, strings the error must contain, folder that must not appear or change)."""
    bad_yaml = tmp / "bad.yaml"
    bad_yaml.write_text("seed: 0\ndata:\n  dataset: digits\n batch_size: 3\n")
    empty = tmp / "empty_run"
    empty.mkdir()
    nodata = tmp / "nodata"
    out = {name: tmp / name / "out" for name in (
        "unknown_key", "bad_type", "bad_yaml", "missing_config", "unknown_space", "cuda", "cifar_missing")}
    return {
        "unknown_key": (["--out", out["unknown_key"], "search.epoch=3"], ["search.epoch", "'search.epochs'"],
                        out["unknown_key"]),
        "bad_type": (["--out", out["bad_type"], "search.epochs=abc"], ["'search.epochs'"], out["bad_type"]),
        "bad_yaml": (["--config", bad_yaml, "--out", out["bad_yaml"]], [str(bad_yaml), "line 4"], out["bad_yaml"]),
        "missing_config": (["--config", tmp / "nope.yaml", "--out", out["missing_config"]],
                           [str(tmp / "nope.yaml")], out["missing_config"]),
        "unknown_space": (["--out", out["unknown_space"], "model.space=nope"], ["'nope'", "nb201"],
                          out["unknown_space"]),
        "cuda": (["--out", out["cuda"], "device=cuda"], ["cuda", "device=cpu"], out["cuda"]),
        "cifar_missing": (["--out", out["cifar_missing"], "data.dataset=cifar10", f"data.root={nodata}",
                           "data.download=false"], [str(nodata / "cifar-10-batches-py"), "data.download"],
                          out["cifar_missing"]),
        "resume_no_config": (["--resume", empty, *TINY], [str(empty), "config.yaml"], empty),
        "same_out_again": (["--out", run_dir, *TINY], ["--resume", str(run_dir)], run_dir),
        # (search.epochs may change on resume: it extends the run, see test_extend_run.py)
        "resume_conflict": (["--resume", run_dir, "search.tau_max=3"], ["search.tau_max"], run_dir),
        "resume_other_out": (["--resume", run_dir, "--out", tmp / "elsewhere"], ["--resume"], tmp / "elsewhere"),
    }


BAD_IDS = ["unknown_key", "bad_type", "bad_yaml", "missing_config", "unknown_space", "cuda", "cifar_missing",
           "resume_no_config", "same_out_again", "resume_conflict", "resume_other_out"]


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory, finished_run):
    """Runs every bad invocation (in parallel: each spends its few seconds importing torch)."""
    run_dir, _, _ = finished_run
    tmp = tmp_path_factory.mktemp("bad")
    cases = _bad_cases(tmp, run_dir)
    assert sorted(cases) == sorted(BAD_IDS)
    before = {name: (_snapshot(guard) if guard.exists() else None) for name, (_, _, guard) in cases.items()}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(_cli, *args) for name, (args, _, _) in cases.items()}
        results = {name: f.result() for name, f in futures.items()}
    return {name: (results[name], cases[name][1], cases[name][2], before[name]) for name in cases}


@pytest.mark.slow
@pytest.mark.parametrize("case", BAD_IDS)
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(bad_runs, case):
    p, expected, guard, before = bad_runs[case]
    msg = _assert_one_line_error(p)
    for text in expected:
        assert text in msg, (text, msg)
    assert p.stdout == ""  # failed before the search started
    if before is None:
        assert not guard.exists(), f"{guard} was created"
    else:
        assert _snapshot(guard) == before, f"{guard} was modified"


@pytest.mark.slow
def test_cli_resume_conflict_names_only_the_changed_key(bad_runs):
    p, _, _, _ = bad_runs["resume_conflict"]
    msg = p.stderr
    assert "search.tau_max" in msg
    for other in ("data.dataset", "model.C", "data.batch_size", "search.epochs"):
        assert other not in msg


def test_cli_resume_finished_run(finished_run, bad_runs):
    out, _, files = finished_run
    p = _cli("--resume", out)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    assert str(out) in p.stdout
    assert _snapshot(out) == files  # nothing left to run: the same files, metrics rewritten identically
    p = _cli("--resume", out, "--out", out, "search.epochs=2", "model.C=4")  # values it already has: no conflict
    assert p.returncode == 0, p.stderr
    assert _snapshot(out) == files


# --------------------------------------------------------------------------- hostile values

@pytest.mark.parametrize("override, key, what", [
    ("search.lr=.inf", "search.lr", "finite"),
    ("search.arch_lr=.inf", "search.arch_lr", "finite"),
    ("search.tau_max=.inf", "search.tau_max", "finite"),
    ("search.lr=.nan", "search.lr", "finite"),
    ("train.lr=-.inf", "train.lr", "finite"),
    ("train.weight_decay=.nan", "train.weight_decay", "finite"),
    ("search.lr=" + "9" * 400, "search.lr", "finite"),           # an int beyond a float's range
    ("search.momentum=1.5", "search.momentum", "[0, 1)"),
    ("search.momentum=1", "search.momentum", "[0, 1)"),
    ("train.momentum=2", "train.momentum", "[0, 1)"),
    ("seed=" + str(2**64), "seed", "2**32 - 1"),
    ("seed=-1", "seed", "2**32 - 1"),
    ("data.image_size=100000", "data.image_size", "[4, 1,024]"),
    ("model.C=1000000", "model.C", "[1, 1,024]"),
    ("model.N=100000", "model.N", "[1, 64]"),
    ("data.batch_size=10000000", "data.batch_size", "[1, 65,536]"),
    ("data.cutout=100000", "data.cutout", "[0, 1,024]"),
    ("data.synthetic_size=100000000", "data.synthetic_size", "[2, 1,000,000]"),
])
def test_values_that_pass_types_but_cannot_work_are_refused(override, key, what):
    msg = _error([override])
    assert repr(key) in msg and what in msg, msg
    assert len(msg) < 200, msg  # a huge value is cut, never echoed whole


def test_caps_admit_the_shipped_configs_and_their_largest_sizes():
    cfg = load_config(overrides=["seed=4294967295", "data.image_size=1024", "model.C=1024", "model.N=64",
                                 "search.momentum=0.99"])
    assert (cfg.seed, cfg.data.image_size, cfg.model.C) == (2**32 - 1, 1024, 1024)
    msg = _error(["data.dataset=synthetic", "data.synthetic_size=1000000", "data.image_size=1024"])
    assert "'data.synthetic_size'" in msg and "GiB" in msg  # each bound alone is fine, together not


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(6))


@pytest.mark.parametrize("text, what", [
    (ALIAS_BOMB, "alias *a is not allowed"),
    ("search: &s {epochs: 3}\ntrain: *s\n", "alias *s is not allowed"),
    ("search:\n  epochs: 3\n  lr: 0.1\n  epochs: 5\n", "key 'epochs' is given twice"),
    ("seed: 1\nseed: 2\n", "key 'seed' is given twice"),
    ("search:\n  arch_betas: [" + ", ".join(["0.5"] * 300_000) + "]\n", "more than the 1,048,576 allowed"),
])
def test_yaml_aliases_duplicates_and_huge_files_are_one_short_line(tmp_path, text, what):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as e:
        load_config(path)
    msg = str(e.value)
    assert what in msg and str(path) in msg and "\n" not in msg and len(msg) < 300, msg


def test_a_long_yaml_list_under_the_size_cap_is_one_short_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("search:\n  arch_betas: [" + ", ".join(["0.5"] * 100_000) + "]\n")  # 500 kB
    with pytest.raises(UserError) as e:
        load_config(path)
    assert "'search.arch_betas'" in str(e.value) and len(str(e.value)) < 300


@pytest.mark.parametrize("override, what", [
    ("search.arch_betas=" + "[&a [1, 1], " + ", ".join(["*a"] * 8) + "]", "alias *a is not allowed"),
    ("search={epochs: 3, epochs: 4}", "given twice"),
    ("search.epochs=" + "x" * 100_000, "'search.epochs' must be an integer"),
    ("x" * 100_000 + "=1", "unknown config key"),
])
def test_hostile_overrides_are_one_short_line(override, what):
    msg = _error([override])
    assert what in msg and "\n" not in msg and len(msg) < 300, msg


def test_genotype_files_refuse_aliases_duplicates_and_huge_strings(tmp_path):
    import search_spaces  # noqa: F401
    from nas.spaces.genotype import load_genotype

    good = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    cases = {
        "alias": (f"space: nb201\ngenotype: &g '{good}'\nother: *g\n", "alias *g is not allowed"),
        "bomb": (ALIAS_BOMB + "space: nb201\n", "alias *a is not allowed"),
        "duplicate": (f"space: nb201\ngenotype: '{good}'\nspace: darts\n", "key 'space' is given twice"),
        "long nb201": ("space: nb201\ngenotype: '|" + "a" * 500_000 + "|'\n", "at most 1024"),
        "long darts": ("space: darts\ngenotype: 'Genotype(" + "(" * 500_000 + "'\n", "at most 4,096"),
        "long space": ("space: " + "s" * 100_000 + "\ngenotype: x\n", "must be the name of a search space"),
    }
    for name, (text, what) in cases.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        with pytest.raises(UserError) as e:
            load_genotype(path)
        msg = str(e.value)
        assert what in msg and "\n" not in msg and len(msg) < 700, (name, msg)


@pytest.mark.parametrize("text", [
    "|nor_conv_3x3~\u0660|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",  # Arabic 0
    "|nor_conv_3x3~\uff10|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",  # fullwidth 0
    "|nor_conv_3x3~0" + "0" * 5000 + "|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
])
def test_nb201_parser_takes_ascii_digits_only(text):
    import search_spaces  # noqa: F401
    from nas.spaces.space import get_space

    with pytest.raises(UserError) as e:
        get_space("nb201").parse(text)
    assert "malformed NB201 arch string" in str(e.value) and len(str(e.value)) < 400


@pytest.mark.parametrize("name", ["nb201_network", "darts_network"])
@pytest.mark.parametrize("genotype", [5, 2.5, ["x"], {"a": 1}])
def test_timm_entry_points_refuse_a_genotype_of_the_wrong_type_in_one_line(name, genotype):
    import timm

    import search_spaces  # noqa: F401

    with pytest.raises(UserError) as e:
        timm.create_model(name, genotype=genotype)
    assert "genotype" in str(e.value) and "\n" not in str(e.value)


def test_darts_parser_caps_the_input_before_ast_parse():
    import search_spaces  # noqa: F401
    from search_spaces.darts import parse_genotype

    for text in ["(" * 200_000, "Genotype(normal=[" + "('sep_conv_3x3', 0), " * 100_000 + "])", "[" * 4000]:
        with pytest.raises(UserError) as e:
            parse_genotype(text)
        assert "malformed DARTS genotype" in str(e.value) and len(str(e.value)) < 700
