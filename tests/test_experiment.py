"""The searched-vs-random experiment tool (nas/experiment/experiment.py) and the digits_clutter task it runs on."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

import search_spaces
from nas.config import build_config
from nas.data import CLUTTER_MEAN, CLUTTER_STD, load_dataset, load_digits, load_digits_clutter
from nas.experiment.experiment import main
from nas.spaces.genotype import load_genotype
from nas.experiment.rank_stats import kendall_tau_b, percentile_among, reliability_of_means, summarize

TINY_DATA = {"dataset": "synthetic", "synthetic_size": 48, "image_size": 8, "batch_size": 16}
TINY_MODEL = {"space": "nb201", "C": 4, "N": 1}


# --------------------------------------------------------------------------- digits_clutter

@pytest.fixture(scope="module")
def clutter():
    return load_digits_clutter(train=True), load_digits_clutter(train=False)


def test_clutter_shapes_values_and_split_sizes(clutter):
    train, test = clutter
    assert train.images.shape == (1500, 1, 16, 16) and test.images.shape == (297, 1, 16, 16)
    for s in (train, test):
        assert s.images.dtype == torch.uint8 and int(s.images.max()) <= 16
        assert s.num_classes == 10 and s.scale == 16.0 and s.flip is False


def test_clutter_is_deterministic(clutter):
    train, test = clutter
    again_train, again_test = load_digits_clutter(True), load_digits_clutter(False)
    assert torch.equal(train.images, again_train.images) and torch.equal(test.images, again_test.images)
    assert torch.equal(train.labels, again_train.labels) and torch.equal(test.labels, again_test.labels)


def _holds_digit(images: torch.Tensor, digits: torch.Tensor) -> torch.Tensor:
    """Whether each 16x16 image has an 8x8 window at least as bright as its digit everywhere.

    The digit is pasted last with max() and only non-negative noise is added,
    so its strokes survive whole at its position.
    """
    windows = F.unfold(images.float(), 8)                         # [N, 64, positions]
    return (windows >= digits.float().reshape(len(digits), 64, 1)).all(1).any(1)


def test_clutter_labels_match_the_source_digits_of_the_same_split(clutter):
    for (images, split), train in zip(((clutter[0], "train"), (clutter[1], "test")), (True, False)):
        source = load_digits(train)
        assert torch.equal(images.labels, source.labels), split
        assert _holds_digit(images.images, source.images).all(), split
    # A test image is not built on its train counterpart's digit (a sanity check of the check).
    assert not _holds_digit(clutter[1].images[:50], load_digits(True).images[:50]).all()


def test_clutter_test_set_is_disjoint_from_train(clutter):
    train, test = clutter
    rows = lambda s: {bytes(r.numpy()) for r in s.images.reshape(len(s), -1)}  # noqa: E731
    assert not rows(train) & rows(test)
    train_digits = {bytes(r.numpy()) for r in load_digits(True).images.reshape(1500, -1)}
    test_digits = {bytes(r.numpy()) for r in load_digits(False).images.reshape(297, -1)}
    assert not train_digits & test_digits  # the clutter splits come from disjoint digits


def test_clutter_fixed_statistics_match_the_training_set(clutter):
    x = clutter[0].images.float() / 16
    assert x.mean().item() == pytest.approx(CLUTTER_MEAN[0], abs=1e-3)
    assert x.std().item() == pytest.approx(CLUTTER_STD[0], abs=1e-3)


def test_clutter_is_a_dataset_name():
    assert build_config({}, ["data.dataset=digits_clutter"]).data.dataset == "digits_clutter"
    assert load_dataset("digits_clutter", train=False).images.shape == (297, 1, 16, 16)


# --------------------------------------------------------------------------- statistics

def test_percentile_on_hand_values():
    population = [70.0, 75.0, 80.0, 85.0]
    assert percentile_among(90.0, population) == 100.0
    assert percentile_among(60.0, population) == 0.0
    assert percentile_among(82.0, population) == 75.0
    assert percentile_among(80.0, population) == 62.5  # a tie counts half
    assert percentile_among(75.0, [75.0, 75.0]) == 50.0
    with pytest.raises(ValueError):
        percentile_among(1.0, [])


def test_summary_on_hand_values():
    s = summarize([1.0, 2.0, 6.0])
    assert s == {"n": 3, "mean": 3.0, "std": pytest.approx(2.6457513), "min": 1.0, "median": 2.0, "max": 6.0}
    assert summarize([5.0])["std"] == 0.0


# --------------------------------------------------------------------------- the tool

def _write_configs(folder):
    search, final = folder / "search.yaml", folder / "final.yaml"
    search.write_text(yaml.safe_dump({"device": "cpu", "data": TINY_DATA, "model": {**TINY_MODEL, "mode": "gdas"},
                                      "search": {"epochs": 1, "progress": False}}))
    final.write_text(yaml.safe_dump({"device": "cpu", "data": TINY_DATA, "model": TINY_MODEL,
                                     "train": {"epochs": 1, "lr": 0.05, "progress": False}}))
    return search, final


@pytest.fixture
def configs(tmp_path):
    return _write_configs(tmp_path)


@pytest.fixture(autouse=True)
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _args(search, final, out, seeds=1, random=2, nonone=1, retrain_seeds=2):
    return ["--search-config", str(search), "--final-config", str(final), "--seeds", str(seeds),
            "--random", str(random), "--random-nonone", str(nonone), "--retrain-seeds", str(retrain_seeds),
            "--out", str(out)]


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory):
    """One tiny experiment run serially: 1 search, 2 random + 1 none-free cell, R=2 (10 jobs)."""
    folder = tmp_path_factory.mktemp("serial")
    search, final = _write_configs(folder)
    out = folder / "exp"
    threads = torch.get_num_threads()
    assert main(_args(search, final, out) + ["search.arch_lr=0.01"]) == 0
    torch.set_num_threads(threads)
    return search, final, out, json.loads((out / "results.json").read_text())


def _comparable(results: dict) -> list[dict]:
    """The measured numbers of every cell (not the times)."""
    return [{k: v for k, v in c.items() if not k.endswith("_time")} for c in results["cells"]]


def test_experiment_measures_each_cell_with_r_seeds_and_reports_val_and_test(serial_run):
    search, final, out, results = serial_run
    space = search_spaces.get("nb201")
    assert results["overrides"] == ["search.arch_lr=0.01"] and results["retrain_seeds"] == 2
    assert results["val_split"] == 0.1  # the experiment's default where the final config sets none
    cells = {c["name"]: c for c in results["cells"]}
    assert list(cells) == ["search-seed0", "random-0", "random-1", "nonone-0"]
    assert [c["group"] for c in cells.values()] == ["searched", "random", "random", "nonone"]
    for name, cell in cells.items():
        runs = [json.loads((out / name / f"retrain-seed{r}" / "final.json").read_text()) for r in range(2)]
        for r, run in enumerate(runs):  # each retraining: its own seed, the same held-out val part
            cfg = yaml.safe_load((out / name / f"retrain-seed{r}" / "config.yaml").read_text())
            assert cfg["seed"] == r and cfg["train"]["val_split"] == 0.1
            assert run["val_images"] == 5 and run["test_images"] == 48
        val, test = [r["val_acc"] for r in runs], [r["test_acc"] for r in runs]
        assert cell["val_accs"] == val and cell["test_accs"] == test
        assert cell["val_mean"] == pytest.approx((val[0] + val[1]) / 2)
        assert cell["val_se"] == pytest.approx(abs(val[0] - val[1]) / 2)  # std/sqrt(2) of two values
        assert cell["test_se"] == pytest.approx(abs(test[0] - test[1]) / 2)
        _, genotype = load_genotype(out / name / "genotype.yaml")
        assert space.format(genotype) == cell["genotype"]
    assert "none" not in space.parse(cells["nonone-0"]["genotype"]).edge_ops()

    searched = cells["search-seed0"]
    for group, members in (("random", ["random-0", "random-1"]), ("nonone", ["nonone-0"])):
        for split in ("val", "test"):
            population = [cells[m][f"{split}_mean"] for m in members]
            assert searched["percentile"][group][split] == percentile_among(searched[f"{split}_mean"], population)
            assert results["summary"][group][split]["mean"] == pytest.approx(sum(population) / len(population))
    noise = results["retraining_noise_se"]["val"]
    within = [(c["val_accs"][0] - c["val_accs"][1]) ** 2 / 2 for c in cells.values()]  # variance of two values
    assert noise == pytest.approx((sum(within) / len(within) / 2) ** 0.5)
    for group, members in (("random", ["random-0", "random-1"]), ("nonone", ["nonone-0"])):
        for split in ("val", "test"):  # the random group's; one none-free cell has nothing to rank
            expected = reliability_of_means([cells[m][f"{split}_accs"] for m in members])
            assert results["reliability_of_cell_means"][group][split] == expected
    assert results["reliability_of_cell_means"]["nonone"] == {"val": None, "test": None}

    markdown = (out / "results.md").read_text()
    assert "**val** = accuracy on the 10% of the training set" in markdown and "(reported only)" in markdown
    assert "| random, none-free | 1 |" in markdown and "| searched | 1 |" in markdown
    shown = results["reliability_of_cell_means"]["random"]["val"]
    assert f"random {'-' if shown is None else f'{shown:.2f}'}; random, none-free -." in markdown
    assert searched["genotype"].replace("|", "\\|") in markdown


def test_kendall_tau_compares_the_supernets_belief_with_the_retrained_val_means(serial_run):
    _, _, out, results = serial_run
    cells = results["cells"]
    stored = json.loads((out / "search-seed0" / "supernet_scores.json").read_text())
    assert sorted(stored) == sorted(c["name"] for c in cells)
    believed = [c["supernet_val_acc"]["search-seed0"] for c in cells]
    assert believed == [stored[c["name"]]["val_acc"] for c in cells]
    (tau,) = results["kendall_tau"]["per_search"]
    space = search_spaces.get("nb201")
    free = [c for c in cells if "none" not in space.parse(c["genotype"]).edge_ops()]
    assert [c["zero_free"] for c in cells] == [c in free for c in cells]
    tau_free = kendall_tau_b([c["supernet_val_acc"]["search-seed0"] for c in free],
                             [c["val_mean"] for c in free]) if len(free) > 1 else None
    assert tau == {"search": "search-seed0", "cells": 4,
                   "tau_b": kendall_tau_b(believed, [c["val_mean"] for c in cells]),
                   "zero_free_cells": len(free), "tau_b_zero_free": tau_free}
    assert results["kendall_tau"]["of_mean_score"] == tau["tau_b"]  # one search: its own score
    # The search scored its own derived cell the same way when it finished (same supernet, same val split).
    search = json.loads((out / "search-seed0" / "search.json").read_text())
    assert stored["search-seed0"]["val_acc"] == pytest.approx(search["val_acc"])


def test_kendall_tau_without_the_zero_op_and_of_the_mean_score():
    from nas.experiment.results import _kendall_tau

    # Two searches; the cell with the zero op is last by retraining and by both supernets. Search A ranks the
    # three zero-free cells right, B ranks them backwards; their mean score ranks them right but one pair.
    val = {"a": 90.0, "b": 80.0, "c": 70.0, "z": 10.0}
    scores = {"A": {"a": 60.0, "b": 50.0, "c": 40.0, "z": 5.0}, "B": {"a": 40.0, "b": 45.0, "c": 50.0, "z": 5.0}}
    cells = [{"name": n, "val_mean": v, "zero_free": n != "z",
              "supernet_val_acc": {s: scores[s][n] for s in scores}} for n, v in val.items()]
    groups = {"searched": [{"name": "A"}, {"name": "B"}]}
    tau = _kendall_tau(cells, groups)
    by = {t["search"]: t for t in tau["per_search"]}
    assert by["A"]["tau_b_zero_free"] == pytest.approx(1.0) and by["B"]["tau_b_zero_free"] == pytest.approx(-1.0)
    assert by["A"]["tau_b"] == pytest.approx(1.0) and by["B"]["tau_b"] == pytest.approx(0.0)  # z's pairs agree
    assert tau["zero_free_mean"] == pytest.approx(0.0) and tau["mean"] == pytest.approx(0.5)
    # mean scores a 50, b 47.5, c 45, z 5: every pair in order
    assert tau["of_mean_score_zero_free"] == pytest.approx(1.0) and tau["of_mean_score"] == pytest.approx(1.0)
    assert by["A"]["zero_free_cells"] == 3


def test_a_second_run_skips_every_finished_job(serial_run, capsys):
    search, final, out, results = serial_run
    finished = sorted(out.rglob("final.json")) + [out / "search-seed0" / "search.json",
                                                  out / "search-seed0" / "supernet_scores.json"]
    assert len(finished) == 10
    mtimes = {p: p.stat().st_mtime_ns for p in finished}
    capsys.readouterr()
    assert main(_args(search, final, out) + ["search.arch_lr=0.01"]) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == 10
    assert {p: p.stat().st_mtime_ns for p in finished} == mtimes
    assert _comparable(json.loads((out / "results.json").read_text())) == _comparable(results)


@pytest.mark.slow
def test_workers_give_the_same_numbers_as_a_serial_run(serial_run, tmp_path, capsys):
    search, final, _, serial = serial_run
    out = tmp_path / "parallel"
    assert main(_args(search, final, out) + ["search.arch_lr=0.01", "--workers", "2"]) == 0
    assert capsys.readouterr().out.count("/10] ") == 10
    assert _comparable(json.loads((out / "results.json").read_text())) == _comparable(serial)


def _printed(capsys, argv):
    capsys.readouterr()
    assert main(argv + ["--print-jobs"]) == 0
    captured = capsys.readouterr()
    return [shlex.split(line) for line in captured.out.splitlines()], captured.err


@pytest.mark.slow
def test_printed_commands_run_one_job_each_and_a_plain_run_gathers_them(configs, tmp_path, capsys):
    search, final = configs
    out = tmp_path / "exp"
    argv = _args(search, final, out, random=1, nonone=0, retrain_seeds=1)  # 4 jobs
    first, note = _printed(capsys, argv)
    ids = [c[c.index("--only-job") + 1] for c in first]
    assert ids == ["search-seed0", "random-0/retrain-seed0"] and "2 more job(s) wait" in note
    for command in first:  # cd DIR && PYTHON -m nas.experiment ARGS --only-job ID
        assert command[:3] == ["cd", str(Path.cwd()), "&&"] and command[3:6] == [sys.executable, "-m", "nas.experiment"]
    # One of them as a real shell command, the other through main() with its arguments.
    subprocess.run(shlex.join(first[0][3:]), shell=True, check=True, cwd=first[0][1], capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert main(first[1][6:]) == 0
    assert (out / "search-seed0" / "search.json").is_file() and (out / "random-0" / "retrain-seed0" / "final.json").is_file()

    second, note = _printed(capsys, argv)
    assert [c[-1] for c in second] == ["search-seed0/retrain-seed0", "search-seed0/supernet"] and not note
    for command in second:
        assert main(command[6:]) == 0
    third, note = _printed(capsys, argv)
    assert third == [] and "every job has finished" in note
    assert main(argv) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == 4
    assert len(json.loads((out / "results.json").read_text())["cells"]) == 2


def test_an_interrupted_job_continues_from_its_checkpoint(configs, tmp_path, capsys):
    search, final = configs
    out = tmp_path / "exp"
    args = _args(search, final, out, random=1, nonone=0, retrain_seeds=1)
    assert main(args) == 0
    done = out / "random-0" / "retrain-seed0" / "final.json"
    before = json.loads(done.read_text())
    done.unlink()  # as if stopped after its last checkpoint, before final.json
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum("skipped" in line for line in lines) == 3  # the search, its retraining and the supernet scores
    after = json.loads(done.read_text())
    assert after["test_acc"] == before["test_acc"] and after["epoch_times"] == before["epoch_times"]


def _set(flag, value):
    def change(args):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    return change


@pytest.mark.parametrize("change, message", [
    (_set("--seeds", "0"), "--seeds must be >= 1"),
    (_set("--random", "0"), "--random must be >= 1"),
    (_set("--retrain-seeds", "0"), "--retrain-seeds must be >= 1"),
    (_set("--random-nonone", "-1"), "--random-nonone must be >= 0"),
    (_set("--workers", "0"), "--workers must be >= 1"),
    (_set("--val-split", "1.5"), "--val-split must be in (0, 1)"),
    (_set("--first-seed", "-1"), "--first-seed must be in [0, 4,294,967,295] with --seeds 1, got -1"),
    (_set("--only-job", "random-9/retrain-seed0"), "is not a job of this experiment"),
    (_set("--only-job", "search-seed0/retrain-seed0"), "needs 'search-seed0' finished first"),
    (lambda a: a.extend(["--print-jobs", "--only-job", "search-seed0"]), "exclude each other"),
    (_set("--search-config", "missing.yaml"), "does not exist"),
    (lambda a: a.append("search.epochz=1"), "unknown config key"),
])
def test_bad_input_is_one_line_and_exit_2(configs, tmp_path, capsys, change, message):
    args = _args(*configs, tmp_path / "exp")
    change(args)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_first_seed_searches_fresh_seeds_under_their_own_names(configs, tmp_path, capsys):
    """Seeds 4..5 (say, to confirm on fresh seeds a choice made on seeds 0..3): their jobs, names and configs."""
    out = tmp_path / "exp"
    assert main(_args(*configs, out, seeds=2) + ["--first-seed", "4", "--print-jobs"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    searches = [line for line in printed if line.endswith(("search-seed4", "search-seed5"))]
    assert len(searches) == 2 and all("--first-seed 4" in line for line in searches)
    assert not any("search-seed0" in line for line in printed)
    job = searches[0].split("--only-job ")[1].strip("'\" ")
    assert main(_args(*configs, out, seeds=2) + ["--first-seed", "4", "--only-job", job]) == 0
    saved = yaml.safe_load((out / job / "config.yaml").read_text())
    assert saved["seed"] == int(job[-1])


def test_none_free_cells_are_refused_where_random_cells_never_hold_none(tmp_path, capsys):
    search, final = tmp_path / "search.yaml", tmp_path / "final.yaml"
    darts = {"space": "darts", "C": 4, "N": 1}
    search.write_text(yaml.safe_dump({"device": "cpu", "data": TINY_DATA, "model": darts}))
    final.write_text(yaml.safe_dump({"device": "cpu", "data": TINY_DATA, "model": darts}))
    assert main(_args(search, final, tmp_path / "exp", nonone=1)) == 2
    assert "the darts space's never do: use --random-nonone 0" in capsys.readouterr().err


def test_a_job_dir_of_another_config_is_refused(configs, tmp_path, capsys):
    search, final = configs
    out = tmp_path / "exp"
    assert main(_args(search, final, out, random=1, nonone=0, retrain_seeds=1)) == 0
    other = tmp_path / "final2.yaml"
    other.write_text(final.read_text().replace("lr: 0.05", "lr: 0.01"))
    capsys.readouterr()
    assert main(_args(search, other, out, random=1, nonone=0, retrain_seeds=1)) == 2
    assert "different config (train.lr differ)" in capsys.readouterr().err
