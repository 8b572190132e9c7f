"""The searched-vs-random experiment tool (nas/experiment/experiment.py) and the digits_clutter task it runs on."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import yaml

import search_spaces
from nas.config import build_config
from nas.data import CLUTTER_MEAN, CLUTTER_STD, load_dataset, load_digits, load_digits_clutter
from nas.experiment.experiment import main, percentile_among, summarize
from nas.spaces.genotype import load_genotype

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

@pytest.fixture
def configs(tmp_path):
    search = tmp_path / "search.yaml"
    final = tmp_path / "final.yaml"
    search.write_text(yaml.safe_dump({"device": "cpu", "data": TINY_DATA, "model": {**TINY_MODEL, "mode": "gdas"},
                                      "search": {"epochs": 1, "progress": False}}))
    final.write_text(yaml.safe_dump({"device": "cpu", "data": TINY_DATA, "model": TINY_MODEL,
                                     "train": {"epochs": 1, "lr": 0.05, "progress": False}}))
    return search, final


@pytest.fixture(autouse=True)
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _args(search, final, out, seeds=1, random=2):
    return ["--search-config", str(search), "--final-config", str(final), "--seeds", str(seeds),
            "--random", str(random), "--out", str(out)]


def test_experiment_writes_tables_and_a_second_run_skips_finished_jobs(configs, tmp_path, capsys):
    search, final = configs
    out = tmp_path / "exp"
    assert main(_args(search, final, out) + ["search.arch_lr=0.01"]) == 0
    first = capsys.readouterr().out
    assert first.count("/4] ") == 4 and "skipped" not in first

    results = json.loads((out / "results.json").read_text())
    space = search_spaces.get("nb201")
    assert results["overrides"] == ["search.arch_lr=0.01"] and results["seeds"] == 1
    (searched,), randoms = results["searched"], results["random_cells"]
    assert searched["name"] == "search-seed0" and searched["seed"] == 0
    population = [r["test_acc"] for r in randoms]
    assert len(population) == 2
    assert searched["percentile"] == percentile_among(searched["test_acc"], population)
    assert results["summary"]["random"]["mean"] == pytest.approx(sum(population) / 2)
    for entry in [searched, *randoms]:
        space.parse(entry["genotype"])
        assert 0.0 <= entry["test_acc"] <= 100.0
    for k, r in enumerate(randoms):
        _, genotype = load_genotype(out / f"random-{k}" / "genotype.yaml")
        assert space.format(genotype) == r["genotype"]
    _, derived = load_genotype(out / "search-seed0" / "genotype.yaml")
    assert space.format(derived) == searched["genotype"]
    markdown = (out / "results.md").read_text()
    assert "| group | n | mean | std | min | median | max |" in markdown
    assert "| searched | 1 |" in markdown and "| random | 2 |" in markdown
    assert searched["genotype"].replace("|", "\\|") in markdown

    finished = sorted(out.rglob("final.json")) + [out / "search-seed0" / "search.json"]
    assert len(finished) == 4
    mtimes = {p: p.stat().st_mtime_ns for p in finished}
    assert main(_args(search, final, out) + ["search.arch_lr=0.01"]) == 0
    second = capsys.readouterr().out
    assert second.count("finished earlier, skipped") == 4
    assert {p: p.stat().st_mtime_ns for p in finished} == mtimes
    again = json.loads((out / "results.json").read_text())
    assert again["searched"] == results["searched"] and again["random_cells"] == results["random_cells"]


def test_an_interrupted_job_continues_from_its_checkpoint(configs, tmp_path, capsys):
    search, final = configs
    out = tmp_path / "exp"
    assert main(_args(search, final, out, random=1)) == 0
    done = out / "random-0" / "retrain" / "final.json"
    before = json.loads(done.read_text())
    done.unlink()  # as if stopped after its last checkpoint, before final.json
    assert main(_args(search, final, out, random=1)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum("skipped" in line for line in lines) == 2  # the search and its retraining
    after = json.loads(done.read_text())
    assert after["test_acc"] == before["test_acc"] and after["epoch_times"] == before["epoch_times"]


@pytest.mark.parametrize("change, message", [
    (lambda a: a.__setitem__(a.index("--seeds") + 1, "0"), "--seeds must be >= 1"),
    (lambda a: a.__setitem__(a.index("--random") + 1, "0"), "--random must be >= 1"),
    (lambda a: a.__setitem__(a.index("--search-config") + 1, "missing.yaml"), "does not exist"),
    (lambda a: a.append("search.epochz=1"), "unknown config key"),
])
def test_bad_input_is_one_line_and_exit_2(configs, tmp_path, capsys, change, message):
    args = _args(*configs, tmp_path / "exp")
    change(args)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_job_dir_of_another_config_is_refused(configs, tmp_path, capsys):
    search, final = configs
    out = tmp_path / "exp"
    assert main(_args(search, final, out, random=1)) == 0
    other = tmp_path / "final2.yaml"
    other.write_text(final.read_text().replace("lr: 0.05", "lr: 0.01"))
    capsys.readouterr()
    assert main(_args(search, other, out, random=1)) == 2
    assert "different config (train.lr differ)" in capsys.readouterr().err
