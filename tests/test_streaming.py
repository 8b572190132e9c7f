"""Image folders streamed from disk: which loader and transform, the torchrun partition, errors, and that a
streamed run is the in-memory run (same seed, fixed transform) and resumes exactly.

The folders are tiny PNGs of random noise written here, so that crops, flips and orders all show in the pixels.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import search_spaces  # noqa: F401
import train_search
from nas.cli.build import build_final_trainer, build_searcher
from nas.config import build_config
from nas.data import (MEMORY_LOADER_MAX_BYTES, FileSet, ImageSet, StreamLoader, TensorLoader, make_loader,
                      open_dataset, resolve_loader, resolve_transform)
from nas.data import loader_choice
from nas.engine.checkpoint import load_checkpoint
from nas.spaces.genotype import genotype_record, save_genotype
from nas.utils.errors import UserError
from resume_helpers import interrupt_then_resume

ROOT = Path(__file__).resolve().parents[1]
NB201_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def quiet(*_):
    pass


def write_folder(root: Path, classes: int = 3, per_class: int = 12, size=(10, 12), seed: int = 0) -> Path:
    """``per_class`` random-noise PNGs in each of ``classes`` class folders (each image differs)."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            pixels = (torch.rand(*size, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(root / f"class{c}" / f"{k:03d}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("images"))


def tiny(root: Path, *extra: str) -> list[str]:
    return ["data.dataset=imagefolder", f"data.root={root}", "data.image_size=8", "data.batch_size=8", "model.C=4",
            "model.N=1", "device=cpu", "seed=3", "deterministic=true", "search.report=false", *extra]


def one_line_error(call) -> str:
    with pytest.raises(UserError) as e:
        call()
    assert "\n" not in str(e.value)
    return str(e.value)


# --------------------------------------------------------------------------- which loader, which transform

def test_auto_loader_holds_small_folders_in_memory_and_streams_large_ones(folder, monkeypatch):
    assert resolve_loader("auto", "fixed", 1000, 32) == "memory"
    side = 224
    too_many = MEMORY_LOADER_MAX_BYTES // (3 * side * side) + 1
    assert resolve_loader("auto", "fixed", too_many - 1, side) == "memory"
    assert resolve_loader("auto", "fixed", too_many, side) == "stream"
    assert resolve_loader("auto", "timm", 10, side) == "stream"  # timm crops the full-size file
    assert resolve_loader("stream", "fixed", 10, 8) == "stream" and resolve_loader("memory", "fixed", 10**9, 8) == "memory"
    assert isinstance(open_dataset("imagefolder", folder, image_size=8), ImageSet)
    # The same folder over a lowered threshold: its 32 training images of 3x8x8 bytes no longer fit.
    monkeypatch.setattr(loader_choice, "MEMORY_LOADER_MAX_BYTES", 32 * 3 * 8 * 8 - 1)
    streamed = open_dataset("imagefolder", folder, image_size=8)
    assert isinstance(streamed, FileSet) and len(streamed) == 32 and "streamed from disk" in streamed.source
    assert isinstance(open_dataset("imagefolder", folder, image_size=8, loader="memory"), ImageSet)
    assert isinstance(make_loader(streamed, 8), StreamLoader)


def test_auto_transform_is_timm_for_imagenet_sized_folders_only():
    assert resolve_transform("auto", 224) == "timm" and resolve_transform("auto", 128) == "timm"
    assert resolve_transform("auto", 64) == "fixed" and resolve_transform("auto", 224, "cifar10") == "fixed"
    assert resolve_transform("fixed", 224) == "fixed" and resolve_transform("timm", 8) == "timm"


def test_timm_transform_crops_randomly_to_train_and_centres_to_evaluate(folder):
    files = open_dataset("imagefolder", folder, image_size=8, transform="timm", loader="stream")
    train = make_loader(files, 8, seed=1)
    x, y = next(train.epoch(0))
    assert x.shape == (8, 3, 8, 8) and x.dtype == torch.float32 and y.shape == (8,)
    assert abs(x.mean().item()) < 1.5 and 0.3 < x.std().item() < 3  # normalised with the ImageNet statistics
    again, other = next(train.epoch(0)), next(train.epoch(1))
    assert torch.equal(again[0], x)            # seeded per (seed, epoch, image)
    assert not torch.equal(other[0], x)        # another epoch, other crops (and order)
    evaluation = make_loader(files, 8, shuffle=False, augment=False, drop_last=False)
    a = torch.cat([x for x, _ in evaluation.epoch(0)])
    b = torch.cat([x for x, _ in evaluation.epoch(5)])
    assert torch.equal(a, b) and a.shape == (32, 3, 8, 8)  # resize + centre crop: no randomness at all


def test_timm_augmentation_does_not_depend_on_the_workers(folder):
    a = open_dataset("imagefolder", folder, image_size=8, transform="timm", num_workers=0)
    b = open_dataset("imagefolder", folder, image_size=8, transform="timm", num_workers=2)
    xa = torch.cat([x for x, _ in make_loader(a, 8, seed=2).epoch(3)])
    xb = torch.cat([x for x, _ in make_loader(b, 8, seed=2).epoch(3)])
    assert torch.equal(xa, xb)


# --------------------------------------------------------------------------- the same batches as in memory

@pytest.mark.parametrize("kw", [dict(shuffle=True, augment=True, cutout=4), dict(shuffle=False, augment=False,
                                                                               drop_last=False)])
def test_streamed_batches_are_the_in_memory_batches(folder, kw):
    memory = open_dataset("imagefolder", folder, image_size=8, loader="memory")
    stream = open_dataset("imagefolder", folder, image_size=8, loader="stream", num_workers=2)
    a, b = TensorLoader(memory, 8, seed=4, **kw), StreamLoader(stream, 8, seed=4, **kw)
    assert len(a) == len(b) and b.image_shape == a.image_shape == (3, 8, 8)
    pairs = list(zip(a.epoch(2), b.epoch(2)))
    assert len(pairs) == len(a)
    for (xa, ya), (xb, yb) in pairs:
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("transform", ["fixed", "timm"])
def test_a_pass_started_at_batch_k_is_the_tail_of_the_whole_pass(folder, transform):
    files = open_dataset("imagefolder", folder, image_size=8, loader="stream", transform=transform)
    loader = make_loader(files, 8, seed=7, cutout=3)
    whole = list(loader.epoch(1, repeat=2))
    tail = list(loader.epoch(1, repeat=2, start=3))
    assert len(tail) == len(whole) - 3
    for (xa, ya), (xb, yb) in zip(whole[3:], tail):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    cycled = loader.cycle(1, start=len(loader) * 2 + 3)  # the arch step's endless val batches, resumed
    assert torch.equal(next(cycled)[0], tail[0][0])


# --------------------------------------------------------------------------- torchrun: DistributedSampler

@pytest.mark.parametrize("drop_last", [True, False])
def test_ranks_partition_each_pass_and_agree_on_its_length(folder, drop_last):
    files = open_dataset("imagefolder", folder, image_size=8, loader="stream")  # 32 images
    world = 3
    loaders = [StreamLoader(files, 6, seed=1, rank=r, world_size=world, drop_last=drop_last) for r in range(world)]
    assert len({len(l) for l in loaders}) == 1 and loaders[0].local_batch == 2
    for epoch in (0, 1):
        per_rank = [torch.cat([b for b in l._batches(epoch, 0)[0]]) for l in loaders]
        seen = torch.cat(per_rank)
        if drop_last:   # every rank reads whole batches of distinct images
            assert seen.unique().numel() == seen.numel() == len(loaders[0]) * 2 * world
        else:           # every image read, the tail padded by repeats as DistributedSampler does
            assert set(seen.tolist()) == set(range(32))
        for l in loaders:  # what a rank yields is what its sampler gave it
            got = torch.cat([y for _, y in l.epoch(epoch)])
            assert torch.equal(got, files.labels[torch.cat(l._batches(epoch, 0)[0])])
    evaluation = [StreamLoader(files, 6, shuffle=False, augment=False, drop_last=False, rank=r, world_size=world)
                  for r in range(world)]
    read = torch.cat([torch.cat(l._batches(0, 0)[0]) for l in evaluation])
    assert sorted(read.tolist()) == list(range(32))  # an evaluation pass reads every image exactly once
    assert sum(len(l) for l in evaluation) == sum(len(list(l.epoch(0))) for l in evaluation)
    first = [torch.cat(l._batches(0, 0)[0]) for l in loaders]
    second = [torch.cat(l._batches(1, 0)[0]) for l in loaders]
    assert not torch.equal(torch.cat(first), torch.cat(second))  # set_epoch reshuffles each pass


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("overrides, key", [
    (["data.loader=disk"], "data.loader"),
    (["data.transform=randaug"], "data.transform"),
    (["data.dataset=digits", "data.loader=stream"], "data.loader"),
    (["data.dataset=cifar10", "data.transform=timm"], "data.transform"),
    (["data.dataset=imagefolder", "data.loader=memory", "data.transform=timm"], "data.loader"),
])
def test_bad_loader_settings_are_one_line_config_errors(overrides, key):
    message = one_line_error(lambda: build_config({}, overrides))
    assert key in message


def test_a_missing_folder_is_one_line_for_the_streamed_loader_too(tmp_path):
    message = one_line_error(lambda: open_dataset("imagefolder", tmp_path / "nowhere", loader="stream"))
    assert "does not exist" in message and "data.root" in message


@pytest.mark.parametrize("skip", [False, True])
def test_an_unreadable_file_is_named_when_read_or_left_out_of_its_batch(tmp_path, skip):
    root = write_folder(tmp_path / "images", classes=2, per_class=10)
    bad = root / "class1" / "004.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated: listed as an image, fails to decode
    files = open_dataset("imagefolder", root, image_size=8, loader="stream", skip_bad_images=skip)
    loader = make_loader(files, 4, shuffle=False, augment=False, drop_last=False)
    if not skip:
        message = one_line_error(lambda: list(loader.epoch(0)))
        assert str(bad) in message and "data.skip_bad_images=true" in message
    else:
        seen = sum(y.numel() for _, y in loader.epoch(0))
        assert seen == len(files) - (1 if str(bad) in files.paths else 0)


# --------------------------------------------------------------------------- whole runs: the same either way

def compare_runs(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    assert ca["model"].keys() == cb["model"].keys()
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k
    strip = lambda d: [{k: v for k, v in json.loads(line).items() if k != "epoch_time"}
                       for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert strip(a) == strip(b) and len(strip(a)) == 2


def test_a_search_streamed_from_disk_is_the_in_memory_search(folder, tmp_path):
    """Same seed, fixed transform (with its crop and flip): identical metrics, weights and logits."""
    for loader in ("memory", "stream"):
        cfg = build_config({}, tiny(folder, f"data.loader={loader}", "data.num_workers=1", "search.epochs=2"))
        (tmp_path / loader).mkdir()
        searcher = build_searcher(cfg, tmp_path / loader, log=quiet)
        assert isinstance(searcher.data.train, StreamLoader) == (loader == "stream")
        searcher.run()
    compare_runs(tmp_path / "memory", tmp_path / "stream")
    assert (tmp_path / "memory" / "genotype.yaml").read_text() == (tmp_path / "stream" / "genotype.yaml").read_text()


def test_a_retraining_streamed_from_disk_is_the_in_memory_retraining(folder, tmp_path):
    space = search_spaces.get("nb201")
    genotype = tmp_path / "genotype.yaml"
    save_genotype(genotype, genotype_record(space, space.parse(NB201_ARCH)))
    runs = {}
    for loader in ("memory", "stream"):
        cfg = build_config({}, tiny(folder, f"data.loader={loader}", "train.epochs=2", "train.val_split=0.2",
                                    "data.cutout=4"))
        trainer, _, _ = build_final_trainer(cfg, genotype, log=quiet)
        assert isinstance(trainer.train_data, StreamLoader) == (loader == "stream")
        trainer.run()
        runs[loader] = trainer
    a, b = runs["memory"], runs["stream"]
    strip = lambda h: [{k: v for k, v in m.items() if k != "epoch_time"} for m in h]
    assert strip(a.history) == strip(b.history) and "test_acc" in a.history[-1] and "val_acc" in a.history[-1]
    for (name, p), q in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        assert torch.equal(p, q), name
    sa, sb = a.summary(), b.summary()
    assert sa["test_images"] == sb["test_images"] == 4 and sa["input_shape"] == sb["input_shape"] == [3, 8, 8]


def test_a_streamed_search_resumed_mid_epoch_is_the_uninterrupted_one(folder, tmp_path):
    cfg = build_config({}, tiny(folder, "data.loader=stream", "search.epochs=2", "search.checkpoint_every=1"))
    (tmp_path / "full").mkdir()
    build_searcher(cfg, tmp_path / "full", log=quiet).run()
    d = tmp_path / "cut"
    d.mkdir()
    steps = len(build_searcher(cfg, log=quiet).data.train)
    cut = steps + 1
    second = interrupt_then_resume(cfg, d, cut, quiet)
    assert (second.epoch, second.step) == divmod(cut, steps) == (1, 1)
    second.run()
    compare_runs(tmp_path / "full", d)


@pytest.mark.slow
def test_the_mobilenet_space_searches_a_streamed_folder(tmp_path):
    """The documented command of docs/data.md, shrunk: one epoch of the mobilenet space on a folder, streamed."""
    root = write_folder(tmp_path / "images", classes=3, per_class=8, size=(40, 48))
    out = tmp_path / "run"
    args = ["--config", str(ROOT / "configs" / "mobilenet_gdas_cifar10.yaml"), "--out", str(out), "data.dataset=imagefolder",
            f"data.root={root}", "data.loader=stream", "data.transform=timm", "data.image_size=32",
            "data.num_workers=2", "data.batch_size=8", "model.C=8", "model.N=1", "search.epochs=1",
            "search.warmup_epochs=0", "search.eval_every=1", "search.report=false", "device=cpu"]
    assert train_search.main(args) == 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and metrics[0]["val_acc"] >= 0
    assert "mobilenet" in (out / "genotype.yaml").read_text()


@pytest.mark.slow
def test_two_torchrun_ranks_stream_their_shares_and_end_identical(folder, tmp_path):
    """A real 2-process gloo search on a streamed folder: each rank reads its DistributedSampler share."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    args = tiny(folder, "data.loader=stream", "search.epochs=1", "data.batch_size=8")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "tests/ddp_worker.py", str(tmp_path), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for k in r0["model"]:
        assert torch.equal(r0["model"][k], r1["model"][k]), k
    assert r0["history"][-1]["genotype"] == r1["history"][-1]["genotype"]
    assert r0["train_batch"].numel() == r1["train_batch"].numel() == 4  # batch 8 over 2 ranks
