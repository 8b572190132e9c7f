"""Retraining: train_final.py on both spaces, resume, timm entry points, genotype export round trips."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

import search_spaces
from nas.cli.build import build_final_trainer, build_searcher
from nas.config import build_config
from nas.spaces.genotype import load_genotype, save_genotype, genotype_record
from search_spaces.darts import PUBLISHED

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "2"}
SYNTH = ["data.dataset=synthetic", "data.synthetic_size=64", "data.image_size=16", "data.batch_size=16",
         "model.C=4", "model.N=1", "seed=2"]


def quiet(*_):
    pass


@pytest.mark.parametrize("space", ["nb201", "darts"])
@pytest.mark.parametrize("mode", ["gdas", "snas", "darts"])
def test_one_epoch_search_exports_a_genotype_that_loads_and_builds(tmp_path, space, mode):
    cfg = build_config({}, SYNTH + [f"model.space={space}", f"model.mode={mode}", "search.epochs=1"])
    searcher = build_searcher(cfg, tmp_path, log=quiet)
    searcher.run()
    loaded_space, genotype = load_genotype(tmp_path / "genotype.yaml")
    assert loaded_space.name == space
    assert loaded_space.format(genotype) == searcher.history[-1]["genotype"]
    net = loaded_space.build_network(genotype, num_classes=4, C=4, N=1)
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 4)


def _genotype_file(tmp_path, space_name, genotype):
    space = search_spaces.get(space_name)
    path = tmp_path / f"{space_name}.yaml"
    save_genotype(path, genotype_record(space, space.parse(genotype) if isinstance(genotype, str) else genotype))
    return path


NB201_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


@pytest.mark.parametrize("space, genotype, extra", [
    ("nb201", NB201_ARCH, []),
    ("darts", PUBLISHED["DARTS_V2"], ["data.image_size=32", "train.auxiliary_weight=0.4",
                                      "train.drop_path_prob=0.2", "data.cutout=8"]),
])
def test_train_final_cli_runs_an_epoch_and_writes_final_json(tmp_path, space, genotype, extra):
    gfile = _genotype_file(tmp_path, space, genotype)
    out = tmp_path / "final"
    args = [sys.executable, "train_final.py", "--genotype", str(gfile), "--out", str(out), *SYNTH,
            f"model.space={space}", "train.epochs=1", *extra]
    proc = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "final.json").read_text())
    assert record["space"] == space and 0 <= record["test_acc"] <= 100
    assert record["params"] > 0 and record["flops"] > 0 and len(record["epoch_times"]) == 1
    if space == "darts":
        assert record["params_with_auxiliary"] > record["params"]
    assert "test accuracy" in proc.stdout
    assert load_genotype(out / "genotype.yaml")[0].name == space


def test_final_training_resume_is_bit_exact(tmp_path):
    gfile = _genotype_file(tmp_path, "nb201", NB201_ARCH)
    cfg = build_config({}, SYNTH + ["train.epochs=2", "deterministic=true"])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    full, _, _ = build_final_trainer(cfg, gfile, tmp_path / "a", log=quiet)
    full.run()
    first, _, _ = build_final_trainer(cfg, gfile, tmp_path / "b", log=quiet)
    first.run(until_epoch=1)
    second, _, _ = build_final_trainer(cfg, gfile, tmp_path / "b", log=quiet)
    second.resume(tmp_path / "b" / "checkpoint.pt")
    second.run()
    a, b = full.net.state_dict(), second.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda h: [{k: v for k, v in m.items() if k != "epoch_time"} for m in h]
    assert strip(full.history) == strip(second.history)


def test_drop_path_is_ramped_linearly(tmp_path):
    gfile = _genotype_file(tmp_path, "darts", PUBLISHED["DARTS_V2"])
    cfg = build_config({}, SYNTH + ["model.space=darts", "train.epochs=4", "train.drop_path_prob=0.2"])
    trainer, _, _ = build_final_trainer(cfg, gfile, log=quiet)
    seen = []
    for epoch in range(2):
        trainer.train_epoch(epoch)
        seen.append(trainer.net.drop_path_prob)
    assert seen == pytest.approx([0.0, 0.05])


def test_genotype_of_another_space_is_refused(tmp_path):
    gfile = _genotype_file(tmp_path, "darts", PUBLISHED["DARTS_V2"])
    proc = subprocess.run([sys.executable, "train_final.py", "--genotype", str(gfile), "--out", str(tmp_path / "o"),
                           *SYNTH], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "darts genotype" in proc.stderr and "model.space=darts" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "o").exists()


@pytest.mark.parametrize("content, fragment", [
    ("space: nb201\ngenotype: '|nor_conv_3x3~0|+|bogus~0|none~1|'\n", "malformed NB201 arch string"),
    ("space: nb201\n", "needs 'space' and 'genotype'"),
    ("space: nosuch\ngenotype: x\n", "unknown search space 'nosuch'"),
    ("space: [unclosed\n", "cannot read genotype file"),
])
def test_bad_genotype_files_get_one_line(tmp_path, content, fragment):
    gfile = tmp_path / "g.yaml"
    gfile.write_text(content)
    proc = subprocess.run([sys.executable, "train_final.py", "--genotype", str(gfile), "--out", str(tmp_path / "o"),
                           *SYNTH], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and fragment in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_missing_genotype_argument(tmp_path):
    proc = subprocess.run([sys.executable, "train_final.py", "--out", str(tmp_path / "o")], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--genotype is required" in proc.stderr


@pytest.mark.parametrize("name, genotype", [("nb201_network", NB201_ARCH), ("darts_network", "DARTS_V2")])
def test_timm_create_model_builds_a_discovered_network(name, genotype):
    model = timm.create_model(name, genotype=genotype, num_classes=7, C=8, N=1)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert name in timm.list_models()


def test_timm_entry_point_refuses_pretrained_and_missing_genotype():
    from nas import UserError
    with pytest.raises(UserError):
        timm.create_model("nb201_network", pretrained=True, genotype=NB201_ARCH)
    with pytest.raises(UserError):
        timm.create_model("darts_network")


def _rows(images: torch.Tensor) -> list[bytes]:
    return sorted(bytes(r.numpy()) for r in images.reshape(len(images), -1).cpu())


DIGITS = ["data.dataset=digits", "data.batch_size=128", "model.C=4", "model.N=1", "train.epochs=1"]


def test_val_split_holds_out_the_same_training_images_for_every_seed(tmp_path):
    from nas.data import load_digits
    gfile = _genotype_file(tmp_path, "nb201", NB201_ARCH)
    whole = load_digits(train=True)
    trainers = [build_final_trainer(build_config({}, DIGITS + [f"seed={s}", "train.val_split=0.2"]),
                                    gfile, log=quiet)[0] for s in (2, 3)]
    for t in trainers:
        assert len(t.val_data.labels) == 300 and len(t.train_data.labels) == 1200
        assert not set(_rows(t.val_data.images)) & set(_rows(t.train_data.images))  # never trained on
        assert _rows(torch.cat([t.val_data.images, t.train_data.images])) == _rows(whole.images)
        assert "validation part" in t.val_set
    assert torch.equal(trainers[0].val_data.images, trainers[1].val_data.images)  # one seed for the split

    trainer = trainers[0]
    trainer.out_dir = tmp_path
    trainer.run()
    record = trainer.write_summary()
    assert record["val_images"] == 300 and record["val_acc"] == trainer.evaluate(trainer.val_data)[1]
    assert record["test_acc"] == trainer.evaluate()[1] and record["test_images"] == 297
    assert json.loads((tmp_path / "final.json").read_text())["val_acc"] == record["val_acc"]

    plain, _, _ = build_final_trainer(build_config({}, DIGITS), gfile, log=quiet)
    assert plain.val_data is None and len(plain.train_data.labels) == 1500


@pytest.mark.parametrize("value, message", [("1.0", "must be in [0, 1)"), ("0.001", "empty training or validation")])
def test_bad_val_split_is_refused(tmp_path, value, message):
    from nas.utils.errors import UserError
    gfile = _genotype_file(tmp_path, "nb201", NB201_ARCH)
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace(")", r"\)")):
        build_final_trainer(build_config({}, SYNTH + [f"train.val_split={value}"]), gfile, log=quiet)
