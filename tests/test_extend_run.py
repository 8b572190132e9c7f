"""Extending a finished run: ``--resume RUN search.epochs=N`` / ``train.epochs=N`` re-plans the schedules."""
import json
import math

import pytest
import yaml

import train_final
import train_search

SYNTH = ["data.dataset=synthetic", "data.synthetic_size=32", "data.image_size=8", "data.batch_size=16",
         "model.C=2", "model.N=1", "seed=3"]
SEARCH = [*SYNTH, "search.report=false", "search.lr=0.05", "search.lr_min=0.01", "search.tau_max=4",
          "search.tau_min=0.5"]
NB201_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def without_times(records):
    return [{k: v for k, v in m.items() if k != "epoch_time"} for m in records]


def epochs_in_config(run, section):
    return yaml.safe_load((run / "config.yaml").read_text())[section]["epochs"]


@pytest.mark.slow
def test_extending_a_search_equals_running_it_that_long_from_the_start(tmp_path):
    # With a constant temperature, epoch 1 runs at the same tau and lr (the cosine's start) whatever
    # the planned length, so 1 epoch extended to 3 must be the 3-epoch run exactly: weights, logits,
    # RNG streams and the re-planned lr of epochs 2 and 3.
    fresh, extended = tmp_path / "fresh", tmp_path / "extended"
    constant = [*SEARCH, "search.tau_schedule=constant"]
    assert train_search.main(["--out", str(fresh), *constant, "search.epochs=3"]) == 0
    assert train_search.main(["--out", str(extended), *constant, "search.epochs=1"]) == 0
    assert train_search.main(["--resume", str(extended), "search.epochs=3"]) == 0
    assert without_times(metrics(extended)) == without_times(metrics(fresh))
    assert (extended / "genotype.yaml").read_text() == (fresh / "genotype.yaml").read_text()
    assert epochs_in_config(extended, "search") == 3


def test_extending_a_search_re_plans_lr_and_temperature_and_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_search.main(["--out", str(run), *SEARCH, "search.epochs=1"]) == 0
    capsys.readouterr()
    assert train_search.main(["--resume", str(run), "search.epochs=3"]) == 0
    printed = capsys.readouterr().out
    lr = 0.01 + 0.5 * (0.05 - 0.01) * (1 + math.cos(math.pi * 1 / 3))  # cosine over 3 epochs, epoch index 1
    tau = 4 - (4 - 0.5) * 1 / 2  # linear from tau_max (epoch index 0) to tau_min (index 2)
    records = metrics(run)
    assert records[0]["tau"] == 0.5  # a 1-epoch plan runs its only epoch at tau_min
    notice = next(line for line in printed.splitlines() if line.startswith("search.epochs 1 -> 3"))
    assert "the schedules (lr, tau) are re-planned over 3 epochs" in notice
    assert f"epoch 2 runs at lr {lr:.4g} (epoch 1 ran at 0.05), tau {tau:.4g} (epoch 1 ran at 0.5)" in notice
    assert [m["epoch"] for m in records] == [1, 2, 3]
    assert records[1]["lr"] == pytest.approx(lr) and records[1]["tau"] == pytest.approx(tau)
    assert records[2]["tau"] == pytest.approx(0.5) and records[2]["lr"] == pytest.approx(
        0.01 + 0.5 * (0.05 - 0.01) * (1 + math.cos(math.pi * 2 / 3)))
    assert epochs_in_config(run, "search") == 3


def test_a_run_cannot_shrink_below_its_finished_epochs_or_change_other_keys(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_search.main(["--out", str(run), *SEARCH, "search.epochs=2"]) == 0
    capsys.readouterr()
    assert train_search.main(["--resume", str(run), "search.epochs=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "has completed 2 epochs; search.epochs must be at least 2" in err, err
    assert epochs_in_config(run, "search") == 2  # a refused resume leaves the run as it was
    assert train_search.main(["--resume", str(run), "search.epochs=4", "search.lr=0.1"]) == 2
    err = capsys.readouterr().err
    assert "search.lr differ" in err and "search.epochs" not in err
    assert train_search.main(["--resume", str(run), "search.epochs=2"]) == 0  # the same length: nothing to do
    assert "already finished all 2 epochs" in capsys.readouterr().out
    assert len(metrics(run)) == 2


def test_extending_a_retraining_re_plans_its_cosine(tmp_path, capsys):
    run = tmp_path / "final"
    common = [*SYNTH, "train.lr=0.08", "train.lr_min=0.02"]
    assert train_final.main(["--genotype", NB201_ARCH, "--out", str(run), *common, "train.epochs=1"]) == 0
    first_weights = (run / "model.pth").read_bytes()
    capsys.readouterr()
    assert train_final.main(["--resume", str(run), "train.epochs=2"]) == 0
    out = capsys.readouterr().out
    lr = 0.02 + 0.5 * (0.08 - 0.02) * (1 + math.cos(math.pi * 1 / 2))  # cosine over 2 epochs, epoch index 1
    assert "train.epochs 1 -> 2: the schedules (lr) are re-planned over 2 epochs" in out
    assert f"epoch 2 runs at lr {lr:.4g} (epoch 1 ran at 0.08)" in out
    records = metrics(run)
    assert [m["epoch"] for m in records] == [1, 2] and records[1]["lr"] == pytest.approx(lr)
    final = json.loads((run / "final.json").read_text())
    assert final["epochs"] == 2 and final["test_acc"] == records[1]["test_acc"]
    assert epochs_in_config(run, "train") == 2
    assert (run / "model.pth").read_bytes() != first_weights  # the weights of the longer run
