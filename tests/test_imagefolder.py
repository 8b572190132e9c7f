"""Image folders: a held-out test split, unreadable files, folder links and class names that must match.

Every image written here is one solid colour of its own, so an image's pixels
identify its file: a test can tell exactly which files a set holds.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import search_spaces
import train_final
import train_search
from nas.cli.build import build_final_trainer, build_search_data_from_config, resolve_device
from nas.config import build_config
from nas.data import TEST_SPLIT_SEED, hold_out, load_dataset, load_imagefolder
from nas.utils.errors import UserError
from nas.spaces.genotype import genotype_record, save_genotype

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
NB201_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
TINY = ["data.dataset=imagefolder", "data.image_size=8", "data.batch_size=8", "model.C=4", "model.N=1",
        "data.augment=false", "device=cpu"]


def _colour(c: int, k: int) -> tuple[int, int, int]:
    return 10 + 40 * c, 5 * k, 255 - 5 * k


def _write(folder: Path, counts: dict[str, int], first_class: int = 0, size=(6, 6)) -> dict[tuple, str]:
    """Writes ``counts[name]`` solid-colour PNGs per class; returns colour -> class name."""
    from PIL import Image
    written = {}
    for c, (name, n) in enumerate(counts.items(), start=first_class):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            colour = _colour(c, k)
            Image.new("RGB", size, colour).save(folder / name / f"{k}.png")
            written[colour] = name
    return written


def _colours(s) -> list[tuple[int, int, int]]:
    """The colour of each image of a set (each image is one solid colour)."""
    assert torch.equal(s.images, s.images[:, :, :1, :1].expand_as(s.images))
    return [tuple(v) for v in s.images[:, :, 0, 0].tolist()]


def _check_labels(s, written: dict, classes: list[str]) -> None:
    assert [classes[i] for i in s.labels.tolist()] == [written[c] for c in _colours(s)]


def _one_line_error(call) -> str:
    with pytest.raises(UserError) as e:
        call()
    message = str(e.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- the held-out test split

def test_flat_folder_holds_out_a_stratified_test_split_that_training_never_sees(tmp_path):
    written = _write(tmp_path, {"a": 20, "b": 10, "c": 30})
    train = load_imagefolder(tmp_path, image_size=8, train=True, test_split=0.1)
    test = load_imagefolder(tmp_path, image_size=8, train=False, test_split=0.1)
    train_colours, test_colours = _colours(train), _colours(test)
    assert len(set(train_colours)) == 54 and len(set(test_colours)) == 6
    assert not set(train_colours) & set(test_colours)
    assert set(train_colours) | set(test_colours) == set(written)
    _check_labels(train, written, ["a", "b", "c"])
    _check_labels(test, written, ["a", "b", "c"])
    assert torch.bincount(test.labels, minlength=3).tolist() == [2, 1, 3]  # 10% of each class
    assert train.num_classes == test.num_classes == 3
    assert test.source == f"held out 10% of {tmp_path} (stratified by class, split seed {TEST_SPLIT_SEED}): 6 images"
    assert train.source == f"{tmp_path} less the held-out 10% test split: 54 images"
    # Same folder, same split, whatever the run's seed.
    for seed in (0, 7):
        again = load_dataset("imagefolder", root=tmp_path, train=False, image_size=8, seed=seed, test_split=0.1)
        assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)
    # Another fraction, another (nested-size) split that is still disjoint.
    quarter = load_imagefolder(tmp_path, image_size=8, train=False, test_split=0.25)
    assert len(quarter) == 15
    assert not set(_colours(quarter)) & set(_colours(load_imagefolder(tmp_path, image_size=8, test_split=0.25)))


def test_hold_out_sizes_strata_and_seed():
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for trial in range(200):
        classes = int(torch.randint(1, 20, (1,), generator=g))
        sizes = torch.randint(1, 50, (classes,), generator=g)
        labels = torch.cat([torch.full((int(n),), c) for c, n in enumerate(sizes)])
        labels = labels[torch.randperm(len(labels), generator=g)]
        fraction = 0.02 + 0.45 * float(torch.rand(1, generator=g))
        kept, held = hold_out(labels, fraction, seed=trial)
        assert len(held) == round(len(labels) * fraction)
        assert sorted(kept.tolist() + held.tolist()) == list(range(len(labels)))
        for c, n in enumerate(sizes.tolist()):  # class c's share of the held-out items
            worst = max(worst, abs(int((labels[held] == c).sum()) - n * len(held) / len(labels)))
    assert worst < 1.0  # rounded up or down, never further
    labels = torch.arange(100) % 4
    first = hold_out(labels, 0.2, seed=0)[1]
    assert torch.equal(first, hold_out(labels, 0.2, seed=0)[1])
    assert set(first.tolist()) != set(hold_out(labels, 0.2, seed=1)[1].tolist())
    assert first.tolist() != list(range(20))  # random, not the first images
    assert torch.bincount(labels[first]).tolist() == [5, 5, 5, 5]


def test_train_and_val_folders_are_training_and_test_sets(tmp_path):
    written = _write(tmp_path / "train", {"a": 4, "b": 3})
    written_val = _write(tmp_path / "val", {"a": 2, "b": 2}, first_class=2)  # other colours, same class names
    train = load_imagefolder(tmp_path, image_size=8, train=True)
    test = load_imagefolder(tmp_path, image_size=8, train=False)
    assert set(_colours(train)) == set(written) and set(_colours(test)) == set(written_val)
    assert [("a", "b")[i] for i in test.labels.tolist()] == [written_val[c] for c in _colours(test)]
    assert test.source == f"{tmp_path / 'val'}: 4 images" and train.source == f"{tmp_path / 'train'}: 7 images"


def test_search_split_is_carved_from_the_non_test_part(tmp_path):
    written = _write(tmp_path, {"a": 12, "b": 12, "c": 16})
    cfg = build_config({}, TINY + [f"data.root={tmp_path}", "data.test_split=0.2"])
    lines = []
    data = build_search_data_from_config(cfg, resolve_device("cpu"), log=lines.append)
    test = load_imagefolder(tmp_path, image_size=8, train=False, test_split=0.2)
    weights = [tuple(v) for v in data.train.images[:, :, 0, 0].tolist()]
    arch = [tuple(v) for v in data.val_eval.images[:, :, 0, 0].tolist()]
    assert len(weights) + len(arch) == 32 and len(test) == 8
    assert not (set(weights) | set(arch)) & set(_colours(test))
    assert set(weights) | set(arch) | set(_colours(test)) == set(written)
    assert lines == [f"training images: {tmp_path} less the held-out 20% test split: 32 images"]


@pytest.mark.parametrize("split", [0.01, 0.99])
def test_split_that_leaves_an_empty_part_is_refused(tmp_path, split):
    _write(tmp_path, {"a": 3, "b": 3})
    message = _one_line_error(lambda: load_imagefolder(tmp_path, image_size=8, test_split=split))
    assert "data.test_split" in message and str(tmp_path) in message


def test_test_split_out_of_range_is_a_config_error():
    for value in (0, 1, -0.1):
        with pytest.raises(UserError, match="data.test_split"):
            build_config({}, [f"data.test_split={value}"])


# --------------------------------------------------------------------------- files that cannot be read

def _truncated(path: Path) -> None:
    """A noisy 9x9 image (under the tests' 100-pixel limit) cut in half."""
    from PIL import Image
    Image.effect_noise((9, 9), 80).convert("RGB").save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _solid(side: int):
    def write(path: Path) -> None:
        from PIL import Image
        Image.new("RGB", (side, side), (9, 9, 9)).save(path)
    return write


BAD_FILES = {
    "truncated png": ("bad.png", _truncated, "image file is truncated"),
    "truncated jpeg": ("bad.jpg", _truncated, "Truncated File Read"),
    "empty file": ("bad.png", lambda p: p.write_bytes(b""), "cannot identify image file"),
    "text named .jpg": ("bad.jpg", lambda p: p.write_text("not an image\n"), "cannot identify image file"),
    "broken link": ("bad.png", lambda p: p.symlink_to(p.parent / "missing.png"), "No such file"),
    # With PIL's limit at 100 pixels: 144 pixels is over it (a warning in PIL), 400 over twice it (an error).
    "decompression bomb (warning)": ("bad.png", _solid(12), "DecompressionBombWarning"),
    "decompression bomb (error)": ("bad.png", _solid(20), "DecompressionBombError"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_unreadable_image_is_named_or_skipped_and_counted(tmp_path, monkeypatch, case):
    from PIL import Image
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # the good images have 36 pixels
    name, make, reason = BAD_FILES[case]
    written = _write(tmp_path / "train", {"a": 3, "b": 2})
    _write(tmp_path / "val", {"a": 1, "b": 1}, first_class=2)
    bad = tmp_path / "train" / "b" / name
    make(bad)
    message = _one_line_error(lambda: load_imagefolder(tmp_path, image_size=8, train=True))
    assert message.startswith(f"cannot read image {str(bad)!r}") and reason in message
    assert "data.skip_bad_images=true" in message
    skipped = load_imagefolder(tmp_path, image_size=8, train=True, skip_bad_images=True)
    assert set(_colours(skipped)) == set(written)
    _check_labels(skipped, written, ["a", "b"])
    assert skipped.source.endswith(": 5 images, 1 unreadable image(s) skipped")
    assert len(load_imagefolder(tmp_path, image_size=8, train=False)) == 2  # the test set is fine


def test_unreadable_image_in_the_held_out_part_is_found_by_the_test_set(tmp_path):
    _write(tmp_path, {"a": 10, "b": 10})
    test = load_imagefolder(tmp_path, image_size=8, train=False, test_split=0.1)
    assert len(test) == 2
    # Break every file: each part names one of its own files.
    for path in tmp_path.rglob("*.png"):
        path.write_bytes(b"")
    for train in (True, False):
        message = _one_line_error(lambda: load_imagefolder(tmp_path, image_size=8, train=train, test_split=0.1))
        assert "cannot read image" in message
    with pytest.raises(UserError, match="no training image left"):
        load_imagefolder(tmp_path, image_size=8, train=True, test_split=0.1, skip_bad_images=True)


def test_hidden_and_non_image_files_are_not_images(tmp_path):
    written = _write(tmp_path / "train", {"a": 2, "b": 2})
    _write(tmp_path / "val", {"a": 1, "b": 1}, first_class=2)
    (tmp_path / "train" / "a" / "notes.txt").write_text("labels checked by hand\n")
    (tmp_path / "train" / "a" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / "train" / "b" / "._0.png").write_bytes(b"\0\5\26\7 AppleDouble")  # macOS resource fork
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "val" / ".ipynb_checkpoints").mkdir()
    s = load_imagefolder(tmp_path, image_size=8, train=True)
    assert s.num_classes == 2 and set(_colours(s)) == set(written)


# --------------------------------------------------------------------------- folder links

def test_looping_folder_links_are_not_followed(tmp_path):
    root = tmp_path / "data"
    written = _write(root, {"a": 5, "b": 5, "c": 6})
    (root / "a" / "again").symlink_to(root, target_is_directory=True)        # back to the root
    (root / "b" / "up").symlink_to(root / "b", target_is_directory=True)     # to itself
    (root / "c" / "sub").mkdir()
    (root / "c" / "sub" / "loop").symlink_to(root / "c", target_is_directory=True)  # to its grandparent
    train = load_imagefolder(root, image_size=8, train=True, test_split=0.25)
    test = load_imagefolder(root, image_size=8, train=False, test_split=0.25)
    assert len(train) + len(test) == 16
    assert set(_colours(train)) | set(_colours(test)) == set(written)
    _check_labels(train, written, ["a", "b", "c"])
    _check_labels(test, written, ["a", "b", "c"])
    assert train.num_classes == 3
    assert "3 looping folder link(s) not followed" in train.source


def test_links_to_folders_outside_are_followed_and_duplicates_read_once(tmp_path):
    root, elsewhere = tmp_path / "data", tmp_path / "storage"
    written = _write(root / "train", {"a": 2, "b": 2})
    _write(root / "val", {"a": 1, "b": 1}, first_class=5)
    written.update(_write(elsewhere, {"more_a": 3}, first_class=2))
    (root / "train" / "a" / "more").symlink_to(elsewhere / "more_a", target_is_directory=True)
    (root / "train" / "a" / "more_again").symlink_to(elsewhere / "more_a", target_is_directory=True)
    (root / "train" / "b" / "0_copy.png").symlink_to(root / "train" / "b" / "0.png")
    s = load_imagefolder(root, image_size=8, train=True)
    assert len(s) == 7 and set(_colours(s)) == set(written)
    assert sorted(s.labels.tolist()) == [0, 0, 0, 0, 0, 1, 1]


@pytest.mark.parametrize("link", ["folder", "file"])
def test_one_file_in_two_classes_is_refused(tmp_path, link):
    _write(tmp_path, {"a": 2, "b": 2})
    if link == "folder":
        (tmp_path / "a" / "from_b").symlink_to(tmp_path / "b", target_is_directory=True)
    else:
        os.link(tmp_path / "b" / "1.png", tmp_path / "a" / "9.png")  # a hard link: no symlink to spot
    message = _one_line_error(lambda: load_imagefolder(tmp_path, image_size=8))
    assert "class a" in message and "class b" in message and "same file" in message


# --------------------------------------------------------------------------- class names

CLASS_MISMATCHES = {
    "renamed class": ({"a": 2, "b": 2}, "val", {"a": 1, "c": 1}, ["only in train/: b", "only in val/: c"]),
    "extra class in val": ({"a": 2, "b": 2}, "val", {"a": 1, "b": 1, "c": 1}, ["only in val/: c"]),
    "class missing from val": ({"a": 2, "b": 2, "c": 2}, "val", {"a": 1, "c": 1}, ["only in train/: b"]),
    "extra class in test": ({"a": 2}, "test", {"a": 1, "z": 1}, ["only in test/: z"]),
}


@pytest.mark.parametrize("case", list(CLASS_MISMATCHES))
@pytest.mark.parametrize("train", [True, False], ids=["train", "test"])
def test_train_and_val_with_different_classes_are_refused(tmp_path, case, train):
    train_counts, eval_name, eval_counts, fragments = CLASS_MISMATCHES[case]
    _write(tmp_path / "train", train_counts)
    _write(tmp_path / eval_name, eval_counts, first_class=len(train_counts))
    message = _one_line_error(lambda: load_imagefolder(tmp_path, image_size=8, train=train))
    assert all(f in message for f in fragments), message
    assert "same class folders" in message


def test_empty_class_folder_is_refused(tmp_path):
    _write(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "readme.txt").write_text("to do\n")
    message = _one_line_error(lambda: load_imagefolder(tmp_path, image_size=8))
    assert "c " in message and "hold no images" in message


# --------------------------------------------------------------------------- the command lines

def _bad_tree(root: Path, case: str) -> None:
    if case == "corrupt image":
        _write(root, {"a": 4, "b": 4})
        for path in (root / "b").glob("*.png"):
            path.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    elif case == "class mismatch":
        _write(root / "train", {"a": 2, "b": 2})
        _write(root / "val", {"a": 1, "c": 1}, first_class=2)
    elif case == "extra class in val":
        _write(root / "train", {"a": 2, "b": 2})
        _write(root / "val", {"a": 1, "b": 1, "c": 1}, first_class=2)
    elif case == "one file in two classes":
        _write(root, {"a": 4, "b": 4})
        (root / "a" / "b_too").symlink_to(root / "b", target_is_directory=True)


CLI_CASES = {"corrupt image": "cannot read image", "class mismatch": "only in val/: c",
             "extra class in val": "only in val/: c", "one file in two classes": "same file"}


def _genotype(tmp_path: Path) -> Path:
    space = search_spaces.get("nb201")
    path = tmp_path / "genotype.yaml"
    save_genotype(path, genotype_record(space, space.parse(NB201_ARCH)))
    return path


@pytest.mark.parametrize("case", list(CLI_CASES))
@pytest.mark.parametrize("script", ["train_final", "train_search"])
def test_cli_refuses_a_bad_image_folder_in_one_line_before_writing(tmp_path, capsys, case, script):
    root, out = tmp_path / "images", tmp_path / "out"
    _bad_tree(root, case)
    args = ["--out", str(out), *TINY, f"data.root={root}", "train.epochs=1", "search.epochs=1"]
    main = train_final.main if script == "train_final" else train_search.main
    if script == "train_final":
        args = ["--genotype", str(_genotype(tmp_path)), *args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and CLI_CASES[case] in err
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train_final.py", "train_search.py"])
def test_cli_process_exits_2_without_traceback(tmp_path, script):
    root, out = tmp_path / "images", tmp_path / "out"
    _bad_tree(root, "corrupt image")
    extra = ["--genotype", str(_genotype(tmp_path))] if script == "train_final.py" else []
    proc = subprocess.run([sys.executable, script, *extra, "--out", str(out), *TINY, f"data.root={root}"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: cannot read image") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr and not out.exists()


@pytest.mark.slow
def test_train_final_reports_the_held_out_test_set(tmp_path):
    root, out = tmp_path / "images", tmp_path / "out"
    _write(root, {"a": 10, "b": 10, "c": 10})
    proc = subprocess.run([sys.executable, "train_final.py", "--genotype", str(_genotype(tmp_path)), "--out",
                           str(out), *TINY, f"data.root={root}", "train.epochs=1"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "final.json").read_text())
    expected = f"held out 10% of {root} (stratified by class, split seed {TEST_SPLIT_SEED}): 3 images"
    assert record["test_set"] == expected and record["test_images"] == 3
    assert f"test images: {expected}" in proc.stdout
    assert f"training images: {root} less the held-out 10% test split: 27 images" in proc.stdout


def test_final_json_names_the_val_folder(tmp_path):
    root = tmp_path / "images"
    _write(root / "train", {"a": 6, "b": 6})
    _write(root / "val", {"a": 2, "b": 3}, first_class=2)
    cfg = build_config({}, TINY + [f"data.root={root}", "train.epochs=1"])
    lines = []
    trainer, _, _ = build_final_trainer(cfg, _genotype(tmp_path), log=lines.append)
    trainer.run()
    record = trainer.summary()
    assert record["test_set"] == f"{root / 'val'}: 5 images" and record["test_images"] == 5
    assert f"test images: {root / 'val'}: 5 images" in lines
