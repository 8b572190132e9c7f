"""Tests of nas/data/: bundled digits, CIFAR pickles, ImageFolder, synthetic data, the loader and the split."""
from __future__ import annotations

import io
import os
import pickle
import pickletools
import shlex
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nas.data import (
    CIFAR10_MEAN,
    CIFAR100_MEAN,
    IMAGENET_MEAN,
    ImageSet,
    TensorLoader,
    build_search_data,
    load_cifar,
    load_dataset,
    load_digits,
    load_imagefolder,
    make_synthetic,
    split_indices,
)
from nas.utils.errors import UserError


def _rows(images: torch.Tensor) -> set[bytes]:
    return {bytes(r.numpy()) for r in images.reshape(len(images), -1)}


# --------------------------------------------------------------------------- digits

@pytest.fixture(scope="module")
def digits():
    return load_digits(train=True), load_digits(train=False)


def test_digits_sizes_shapes_and_values(digits):
    train, test = digits
    assert train.images.shape == (1500, 1, 8, 8)
    assert test.images.shape == (297, 1, 8, 8)
    for s in (train, test):
        assert s.images.dtype == torch.uint8
        assert s.labels.dtype == torch.int64
        assert int(s.images.min()) == 0 and int(s.images.max()) == 16
        assert s.num_classes == 10
        assert sorted(s.labels.unique().tolist()) == list(range(10))
        assert s.scale == 16.0 and s.flip is False and s.pad == 1
        assert len(s) == len(s.labels)


def test_digits_train_and_test_are_disjoint(digits):
    train, test = digits
    train_rows, test_rows = _rows(train.images), _rows(test.images)
    assert len(train_rows) == 1500 and len(test_rows) == 297  # no duplicate images inside a split either
    assert not train_rows & test_rows


def test_digits_deterministic(digits):
    train, test = digits
    again_train, again_test = load_digits(True), load_digits(False)
    assert torch.equal(train.images, again_train.images) and torch.equal(train.labels, again_train.labels)
    assert torch.equal(test.images, again_test.images) and torch.equal(test.labels, again_test.labels)
    assert train.mean == again_train.mean and train.std == again_train.std


def test_digits_statistics_normalise_to_zero_mean_unit_std(digits):
    train, _ = digits
    loader = TensorLoader(train, batch_size=len(train), shuffle=False, augment=False, drop_last=False)
    (x, _), = list(loader.epoch(0))
    assert abs(x.mean().item()) < 0.05
    assert abs(x.std().item() - 1.0) < 0.05


# --------------------------------------------------------------------------- CIFAR pickles

class _Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the original CIFAR files (protocol 2):
    strings and raw array bytes as py2 ``str`` (BINSTRING opcodes), numpy under ``numpy.core``."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        n = len(data)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + data if n < 256
                   else pickle.BINSTRING + struct.pack("<i", n) + data)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str

    def save_global(self, obj, name=None):
        name = name or obj.__name__
        module = getattr(obj, "__module__", "")
        if module.startswith("numpy._core"):
            self.write(pickle.GLOBAL + module.replace("numpy._core", "numpy.core").encode() + b"\n"
                       + name.encode() + b"\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def _dump_py3(obj, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _dump_py2(obj, path: Path) -> None:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    data = buf.getvalue()
    assert b"numpy.core.multiarray\n_reconstruct" in data
    assert not {op.name for op, _, _ in pickletools.genops(data)} & {"BINUNICODE", "SHORT_BINUNICODE"}
    path.write_bytes(data)


def _pixel(i: int, c: int, h: int, w: int) -> int:
    """A pattern that differs along every axis (so any transposition or channel swap shows)."""
    return (i * 7 + c * 101 + h * 13 + w * 3) % 256


def _cifar_rows(first: int, n: int) -> np.ndarray:
    """CIFAR rows: 1024 R, then 1024 G, then 1024 B, each 32x32 row-major."""
    i, c, h, w = np.meshgrid(np.arange(first, first + n), np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    return ((i * 7 + c * 101 + h * 13 + w * 3) % 256).astype(np.uint8).reshape(n, 3072)


def _write_cifar10(root: Path, per_batch: int = 3, test_size: int = 4, dump=_dump_py3) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for b in range(1, 6):
        first = (b - 1) * per_batch
        dump({"batch_label": f"training batch {b} of 5",
              "labels": [(first + k) % 10 for k in range(per_batch)],
              "data": _cifar_rows(first, per_batch),
              "filenames": [f"img_{first + k}.png" for k in range(per_batch)]}, folder / f"data_batch_{b}")
    dump({"batch_label": "testing batch 1 of 1", "labels": [9 - k for k in range(test_size)],
          "data": _cifar_rows(1000, test_size), "filenames": [f"t{k}.png" for k in range(test_size)]},
         folder / "test_batch")


def _write_cifar100(root: Path, n_train: int = 5, n_test: int = 3, dump=_dump_py3) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    dump({"filenames": [f"x{k}.png" for k in range(n_train)], "batch_label": "training batch 1 of 1",
          "fine_labels": [99 - 17 * k for k in range(n_train)], "coarse_labels": [k for k in range(n_train)],
          "data": _cifar_rows(0, n_train)}, folder / "train")
    dump({"filenames": [f"y{k}.png" for k in range(n_test)], "batch_label": "testing batch 1 of 1",
          "fine_labels": [50 + k for k in range(n_test)], "coarse_labels": [1] * n_test,
          "data": _cifar_rows(500, n_test)}, folder / "test")


def _assert_pattern(images: torch.Tensor, first: int) -> None:
    n = images.shape[0]
    for i in range(n):
        for c, h, w in [(0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 0), (2, 31, 31), (1, 5, 27), (2, 30, 2)]:
            assert int(images[i, c, h, w]) == _pixel(first + i, c, h, w), (i, c, h, w)
    # And the whole tensor, in one comparison.
    expected = torch.from_numpy(_cifar_rows(first, n).reshape(n, 3, 32, 32))
    assert torch.equal(images, expected)


@pytest.mark.parametrize("dump", [_dump_py3, _dump_py2], ids=["py3-protocol2", "py2-cpickle"])
def test_cifar10_train_and_test(tmp_path, dump):
    _write_cifar10(tmp_path, per_batch=3, test_size=4, dump=dump)
    train = load_cifar("cifar10", tmp_path, train=True)
    assert train.images.shape == (15, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64
    assert train.labels.tolist() == [k % 10 for k in range(15)]  # batches 1..5 concatenated in order
    _assert_pattern(train.images, first=0)
    assert train.num_classes == 10 and train.mean == CIFAR10_MEAN and train.scale == 255.0

    test = load_cifar("cifar10", tmp_path, train=False)
    assert test.images.shape == (4, 3, 32, 32)
    assert test.labels.tolist() == [9, 8, 7, 6]
    _assert_pattern(test.images, first=1000)

    via_name = load_dataset("cifar10", root=tmp_path, train=True)
    assert torch.equal(via_name.images, train.images) and torch.equal(via_name.labels, train.labels)


@pytest.mark.parametrize("dump", [_dump_py3, _dump_py2], ids=["py3-protocol2", "py2-cpickle"])
def test_cifar100_uses_fine_labels(tmp_path, dump):
    _write_cifar100(tmp_path, n_train=5, n_test=3, dump=dump)
    train = load_cifar("cifar100", str(tmp_path), train=True)
    assert train.images.shape == (5, 3, 32, 32)
    assert train.labels.tolist() == [99 - 17 * k for k in range(5)]
    assert train.num_classes == 100 and train.mean == CIFAR100_MEAN
    _assert_pattern(train.images, first=0)
    test = load_cifar("cifar100", tmp_path, train=False)
    assert test.labels.tolist() == [50, 51, 52]
    _assert_pattern(test.images, first=500)


def test_cifar_missing_folder_names_path_and_download(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(UserError) as e:
        load_cifar("cifar10", root, train=True)
    msg = str(e.value)
    assert str(root / "cifar-10-batches-py") in msg
    assert "data.download" in msg
    assert not root.exists()  # looking does not create anything
    with pytest.raises(UserError) as e:
        load_dataset("cifar100", root=root, train=False)
    assert str(root / "cifar-100-python") in str(e.value) and "data.download" in str(e.value)


def test_cifar_missing_single_batch_is_named(tmp_path):
    _write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(UserError, match="data_batch_4"):
        load_cifar("cifar10", tmp_path, train=True)
    assert len(load_cifar("cifar10", tmp_path, train=False)) == 4  # the test batch is still there


class _Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


class _ExecPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.mark.parametrize("payload", [_Payload, _ExecPayload], ids=["os.system", "builtins.exec"])
def test_cifar_pickle_with_code_is_refused_and_not_run(tmp_path, payload):
    _write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    bad = tmp_path / "cifar-10-batches-py" / "test_batch"
    _dump_py3({"data": payload(marker), "labels": [0]}, bad)
    with pytest.raises(UserError) as e:
        load_cifar("cifar10", tmp_path, train=False)
    assert "test_batch" in str(e.value)
    assert not marker.exists()
    # The payload is live: an ordinary unpickler does run it (so the check above can fail).
    pickle.loads(bad.read_bytes())
    assert marker.exists()


def test_cifar_corrupt_file_is_user_error(tmp_path):
    _write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(UserError, match="data_batch_2"):
        load_cifar("cifar10", tmp_path, train=True)


def test_load_dataset_unknown_name():
    with pytest.raises(UserError, match="mnist"):
        load_dataset("mnist")


# --------------------------------------------------------------------------- ImageFolder

COLOURS = {"a_red": (255, 0, 0), "b_green": (0, 255, 0), "c_blue": (0, 0, 255)}


def _write_pngs(folder: Path, counts: dict[str, int], size=(10, 6)) -> None:
    from PIL import Image
    for cls, n in counts.items():
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            Image.new("RGB", size, COLOURS[cls]).save(folder / cls / f"{k}.png")


def _check_colours(s: ImageSet, classes: list[str]) -> None:
    for img, label in zip(s.images, s.labels):
        colour = torch.tensor(COLOURS[classes[int(label)]], dtype=torch.uint8).view(3, 1, 1)
        assert torch.equal(img, colour.expand_as(img))


def test_imagefolder_flat_root(tmp_path):
    _write_pngs(tmp_path, {"a_red": 2, "b_green": 3, "c_blue": 1}, size=(10, 6))
    s = load_imagefolder(tmp_path, image_size=8, test_split=0.2)  # holds out round(6 * 0.2) = 1 image
    held = load_imagefolder(tmp_path, image_size=8, train=False, test_split=0.2)
    assert s.images.shape == (5, 3, 8, 8) and s.images.dtype == torch.uint8
    assert held.images.shape == (1, 3, 8, 8)
    assert sorted(s.labels.tolist() + held.labels.tolist()) == [0, 0, 1, 1, 1, 2]
    assert s.num_classes == 3 and held.num_classes == 3
    _check_colours(s, ["a_red", "b_green", "c_blue"])
    _check_colours(held, ["a_red", "b_green", "c_blue"])
    assert s.pad == 1 and s.mean == IMAGENET_MEAN
    bigger = load_imagefolder(tmp_path, image_size=16, test_split=0.2)
    assert bigger.images.shape == (5, 3, 16, 16) and bigger.pad == 2


def test_imagefolder_train_and_val_subfolders(tmp_path):
    _write_pngs(tmp_path / "train", {"a_red": 3, "b_green": 2})
    _write_pngs(tmp_path / "val", {"a_red": 1, "b_green": 1})
    train = load_imagefolder(tmp_path, image_size=4, train=True)
    val = load_imagefolder(tmp_path, image_size=4, train=False)
    assert train.images.shape == (5, 3, 4, 4) and sorted(train.labels.tolist()) == [0, 0, 0, 1, 1]
    assert val.images.shape == (2, 3, 4, 4) and sorted(val.labels.tolist()) == [0, 1]
    _check_colours(train, ["a_red", "b_green"])
    _check_colours(val, ["a_red", "b_green"])
    via_name = load_dataset("imagefolder", root=tmp_path, train=False, image_size=4)
    assert torch.equal(via_name.images, val.images)


def test_imagefolder_test_subfolder_and_missing_eval_split(tmp_path):
    _write_pngs(tmp_path / "train", {"a_red": 2, "c_blue": 2})
    with pytest.raises(UserError, match="val"):
        load_imagefolder(tmp_path, image_size=4, train=False)
    _write_pngs(tmp_path / "test", {"a_red": 1, "c_blue": 2})
    test = load_imagefolder(tmp_path, image_size=4, train=False)
    assert len(test) == 3
    _check_colours(test, ["a_red", "c_blue"])


def test_imagefolder_missing_or_empty_root(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(UserError) as e:
        load_imagefolder(missing)
    assert str(missing) in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no images"):
        load_imagefolder(empty)


# --------------------------------------------------------------------------- synthetic

def test_synthetic_shapes_and_determinism():
    s = make_synthetic(size=40, num_classes=3, image_size=12, channels=2, seed=5)
    assert s.images.shape == (40, 2, 12, 12) and s.images.dtype == torch.uint8
    assert s.labels.shape == (40,) and s.labels.dtype == torch.int64
    assert 0 <= int(s.labels.min()) and int(s.labels.max()) < 3 and s.num_classes == 3
    assert len(s.mean) == 2 and len(s.std) == 2 and s.pad == 12 // 8
    again = make_synthetic(size=40, num_classes=3, image_size=12, channels=2, seed=5)
    assert torch.equal(s.images, again.images) and torch.equal(s.labels, again.labels)
    other = make_synthetic(size=40, num_classes=3, image_size=12, channels=2, seed=6)
    assert not torch.equal(s.images, other.images)
    test = make_synthetic(size=40, num_classes=3, image_size=12, channels=2, seed=5, train=False)
    assert not torch.equal(s.images, test.images)
    via_name = load_dataset("synthetic", image_size=12, synthetic_size=40, synthetic_classes=3, seed=5)
    assert via_name.images.shape == (40, 3, 12, 12)
    assert torch.equal(via_name.labels, make_synthetic(40, 3, 12, seed=5).labels)


def test_synthetic_train_and_test_share_class_templates():
    """Learnable: nearest class mean from the train set classifies the test set of the same seed."""
    train = make_synthetic(size=400, num_classes=4, image_size=8, seed=3)
    test = make_synthetic(size=200, num_classes=4, image_size=8, seed=3, train=False)
    x_tr, x_te = train.images.float().flatten(1), test.images.float().flatten(1)
    means = torch.stack([x_tr[train.labels == k].mean(0) for k in range(4)])
    pred = torch.cdist(x_te, means).argmin(1)
    assert (pred == test.labels).float().mean() > 0.9


# --------------------------------------------------------------------------- TensorLoader

def _indexed_set(n: int, channels: int = 1, size: int = 4, pad: int = 0, flip: bool = False,
                 mean=None, std=None) -> ImageSet:
    """Random non-zero images; label i identifies image i (so a batch can be traced back)."""
    g = torch.Generator().manual_seed(1)
    images = torch.randint(1, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    return ImageSet(images, torch.arange(n), n, mean or (0.5,) * channels, std or (0.25,) * channels,
                    pad=pad, flip=flip)


def _normalise(raw: torch.Tensor, s: ImageSet) -> torch.Tensor:
    mean = torch.tensor(s.mean).view(-1, 1, 1)
    std = torch.tensor(s.std).view(-1, 1, 1)
    return (raw.float() / s.scale - mean) / std


def _labels(loader: TensorLoader, epoch: int, repeat: int = 0) -> list[int]:
    return [int(v) for _, y in loader.epoch(epoch, repeat) for v in y]


def test_loader_batch_shapes_and_len():
    s = _indexed_set(10, channels=3, size=6)
    dropping = TensorLoader(s, batch_size=4, drop_last=True)
    batches = list(dropping.epoch(0))
    assert len(dropping) == 2 and len(batches) == 2
    for x, y in batches:
        assert x.shape == (4, 3, 6, 6) and x.dtype == torch.float32
        assert y.shape == (4,) and y.dtype == torch.int64
    keeping = TensorLoader(s, batch_size=4, drop_last=False)
    batches = list(keeping.epoch(0))
    assert len(keeping) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    assert sorted(_labels(keeping, 0)) == list(range(10))  # every image once
    dropped = _labels(dropping, 0)
    assert len(set(dropped)) == 8  # no repeats
    # A set no larger than one batch still gives one (full) batch rather than none.
    small = TensorLoader(_indexed_set(3), batch_size=4, drop_last=True)
    assert len(small) == 1 and [len(y) for _, y in small.epoch(0)] == [3]
    exact = TensorLoader(_indexed_set(8), batch_size=4, drop_last=False)
    assert len(exact) == 2


def test_loader_shuffle_is_a_function_of_seed_and_epoch():
    s = _indexed_set(50)
    loader = TensorLoader(s, batch_size=10, shuffle=True, augment=False, seed=3)
    first = _labels(loader, 4)
    assert sorted(first) == list(range(50))
    assert first != list(range(50))
    assert _labels(loader, 4) == first                       # same epoch, same order
    assert _labels(TensorLoader(s, 10, seed=3), 4) == first  # a new loader agrees
    assert _labels(loader, 5) != first                       # another epoch, another order
    assert _labels(TensorLoader(s, 10, seed=4), 4) != first  # another seed, another order
    plain = TensorLoader(s, batch_size=10, shuffle=False)
    assert _labels(plain, 0) == list(range(50)) == _labels(plain, 7)


def test_loader_normalisation_is_exact_per_channel():
    s = _indexed_set(6, channels=3, size=5, pad=2, flip=True, mean=(0.1, 0.5, 0.9), std=(0.2, 0.3, 0.4))
    loader = TensorLoader(s, batch_size=6, shuffle=False, augment=False, drop_last=False)
    (x, y), = list(loader.epoch(0))
    assert torch.allclose(x, _normalise(s.images[y], s), atol=1e-5)


def test_loader_normalised_synthetic_is_roughly_standard():
    s = make_synthetic(size=256, num_classes=4, image_size=16, seed=0)
    loader = TensorLoader(s, batch_size=256, shuffle=False, augment=False, drop_last=False)
    (x, _), = list(loader.epoch(0))
    assert abs(x.mean().item()) < 0.25
    assert 0.75 < x.std().item() < 1.35
    assert x.abs().max() <= 2.0 + 1e-4  # (p - 0.5) / 0.25 for pixels p in [0, 1]


def _windows(raw: torch.Tensor, pad: int, flips: bool) -> list[tuple[int, int, bool, torch.Tensor]]:
    """Every zero-filled shift (and mirror) of one raw image."""
    C, H, W = raw.shape
    out = []
    for mirrored in ([False, True] if flips else [False]):
        img = raw.flip(-1) if mirrored else raw
        padded = F.pad(img, (pad, pad, pad, pad))
        for oy in range(2 * pad + 1):
            for ox in range(2 * pad + 1):
                out.append((oy - pad, ox - pad, mirrored, padded[:, oy:oy + H, ox:ox + W]))
    return out


def _match(x: torch.Tensor, raw: torch.Tensor, s: ImageSet, pad: int, flips: bool) -> list[tuple[int, int, bool]]:
    return [(dy, dx, m) for dy, dx, m, w in _windows(raw, pad, flips)
            if torch.allclose(x, _normalise(w, s), atol=1e-5)]


def test_loader_random_crop_is_a_zero_filled_shift():
    s = _indexed_set(64, channels=2, size=5, pad=2, flip=False)
    loader = TensorLoader(s, batch_size=16, shuffle=True, augment=True, seed=0)
    shifts = []
    for x, y in loader.epoch(0):
        for img, label in zip(x, y):
            found = _match(img, s.images[label], s, pad=2, flips=False)
            assert len(found) == 1, f"image {int(label)} is no shift of its original"
            shifts.append(found[0][:2])
    assert len(set(shifts)) >= 10                     # the window moves
    assert max(max(abs(dy), abs(dx)) for dy, dx in shifts) == 2  # up to the full padding
    assert any(shift != (0, 0) for shift in shifts)
    # Same epoch, same crops; next epoch, new crops.
    again = torch.cat([x for x, _ in loader.epoch(0)])
    assert torch.equal(again, torch.cat([x for x, _ in loader.epoch(0)]))
    assert not torch.equal(again, torch.cat([x for x, _ in loader.epoch(1)]))


def test_loader_flip_only_when_dataset_allows_it():
    flipping = _indexed_set(64, channels=1, size=4, pad=0, flip=True)
    seen = set()
    for x, y in TensorLoader(flipping, batch_size=64, augment=True).epoch(0):
        for img, label in zip(x, y):
            found = _match(img, flipping.images[label], flipping, pad=0, flips=True)
            assert len(found) == 1
            seen.add(found[0][2])
    assert seen == {False, True}

    fixed = _indexed_set(64, channels=1, size=4, pad=0, flip=False)
    for x, y in TensorLoader(fixed, batch_size=64, augment=True).epoch(0):
        assert torch.allclose(x, _normalise(fixed.images[y], fixed), atol=1e-5)


def test_loader_crop_and_flip_together_and_augment_off():
    s = _indexed_set(48, channels=3, size=4, pad=1, flip=True)
    mirrored, shifted = set(), set()
    for x, y in TensorLoader(s, batch_size=16, augment=True, seed=2).epoch(3):
        for img, label in zip(x, y):
            found = _match(img, s.images[label], s, pad=1, flips=True)
            assert found, f"image {int(label)} is no shifted/mirrored copy of its original"
            mirrored.add(found[0][2])
            shifted.add(found[0][:2])
    assert mirrored == {False, True} and len(shifted) > 1
    # augment=False: neither crop nor flip, even though the set has pad and flip.
    for x, y in TensorLoader(s, batch_size=16, augment=False, seed=2).epoch(3):
        assert torch.allclose(x, _normalise(s.images[y], s), atol=1e-5)


def test_loader_cycle_runs_past_one_pass():
    s = _indexed_set(10)
    loader = TensorLoader(s, batch_size=4, shuffle=True, augment=False, drop_last=True, seed=1)
    it = loader.cycle(5)
    got = [next(it) for _ in range(7)]  # 2 batches per pass: 3.5 passes
    expected = list(loader.epoch(5, 0)) + list(loader.epoch(5, 1)) + list(loader.epoch(5, 2)) + list(loader.epoch(5, 3))
    for (x, y), (ex, ey) in zip(got, expected):
        assert torch.equal(y, ey) and torch.equal(x, ex)
    assert _labels(loader, 5, 0) != _labels(loader, 5, 1)  # each pass reshuffles
    assert [int(v) for _, y in got[:2] for v in y] == _labels(loader, 5)


def test_loader_start_skips_batches_without_changing_the_rest():
    """A resumed epoch (``start`` batches already seen) gets exactly the remaining batches, augmentation included."""
    s = _indexed_set(40, channels=2, size=5, pad=1, flip=True)
    loader = TensorLoader(s, batch_size=8, shuffle=True, augment=True, seed=4)
    full = list(loader.epoch(2, 1))
    rest = list(loader.epoch(2, 1, start=3))
    assert len(full) == 5 and len(rest) == 2
    for (x, y), (ex, ey) in zip(rest, full[3:]):
        assert torch.equal(y, ey) and torch.equal(x, ex)
    # cycle(start=k) continues the endless stream after k batches, across pass boundaries.
    whole = loader.cycle(2)
    stream = [next(whole) for _ in range(13)]
    for k in (0, 4, 5, 7):
        it = loader.cycle(2, start=k)
        for (x, y), (ex, ey) in zip([next(it) for _ in range(13 - k)], stream[k:]):
            assert torch.equal(y, ey) and torch.equal(x, ex)


# --------------------------------------------------------------------------- split

def test_split_indices_disjoint_covering_sized_and_seeded():
    a, b = split_indices(100, 0.7, seed=0)
    assert len(a) == 70 and len(b) == 30
    assert sorted(torch.cat([a, b]).tolist()) == list(range(100))
    a2, b2 = split_indices(100, 0.7, seed=0)
    assert torch.equal(a, a2) and torch.equal(b, b2)
    a3, _ = split_indices(100, 0.7, seed=1)
    assert set(a3.tolist()) != set(a.tolist())
    assert len(split_indices(7, 0.5, seed=0)[0]) == 4  # rounds
    assert a.tolist() != sorted(a.tolist())  # random, not the first 70


@pytest.mark.parametrize("n, fraction", [(3, 0.1), (3, 0.9), (1, 0.5)])
def test_split_indices_refuses_an_empty_part(n, fraction):
    with pytest.raises(UserError, match="data.split"):
        split_indices(n, fraction, seed=0)


def _val_labels(sd) -> list[int]:
    return [int(v) for _, y in sd.val_eval.epoch(0) for v in y]


def test_build_search_data_splits_and_wraps():
    s = _indexed_set(100, channels=3, size=8, pad=1, flip=True)
    sd = build_search_data(s, split=0.7, batch_size=10, augment=True, seed=0)
    train = [int(v) for _, y in sd.train.epoch(0) for v in y]
    val_eval = _val_labels(sd)
    val = [int(v) for _, y in sd.val.epoch(0) for v in y]
    assert len(train) == 70 and len(val_eval) == 30
    assert not set(train) & set(val_eval)
    assert sorted(train + val_eval) == list(range(100))
    assert sorted(val) == sorted(val_eval)  # arch steps draw from the val part
    assert (sd.num_classes, sd.in_channels, sd.image_size) == (100, 3, 8)
    # val_eval: plain images, fixed order; train and val: augmented.
    (x, y), = list(sd.val_eval.epoch(0))
    assert torch.allclose(x, _normalise(s.images[y], s), atol=1e-5)
    assert _val_labels(sd) == val_eval
    x, y = next(sd.val.epoch(0))
    assert not torch.allclose(x, _normalise(s.images[y], s), atol=1e-5)
    x, y = next(sd.train.epoch(0))
    assert not torch.allclose(x, _normalise(s.images[y], s), atol=1e-5)
    # Weight and arch steps do not walk their halves in lock step.
    assert sd.train.seed != sd.val.seed

    plain = build_search_data(s, split=0.7, batch_size=10, augment=False, seed=0)
    x, y = next(plain.train.epoch(0))
    assert torch.allclose(x, _normalise(s.images[y], s), atol=1e-5)


def test_build_search_data_deterministic_by_seed():
    s = _indexed_set(60)
    first = build_search_data(s, split=0.5, batch_size=8, seed=7)
    assert len(_val_labels(first)) == 30
    assert set(_val_labels(build_search_data(s, split=0.5, batch_size=8, seed=7))) == set(_val_labels(first))
    assert set(_val_labels(build_search_data(s, split=0.5, batch_size=8, seed=8))) != set(_val_labels(first))
    again = build_search_data(s, split=0.5, batch_size=8, seed=7)
    assert _labels(again.train, 2) == _labels(first.train, 2)
