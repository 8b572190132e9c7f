"""The bundled digits_clutter_large task (nas/data/digits_clutter.py): sizes, determinism, labels, disjoint splits."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nas.config import build_config
from nas.data import (CLUTTER_LARGE_COPIES, load_dataset, load_digits, load_digits_clutter,
                      load_digits_clutter_large)


@pytest.fixture(scope="module")
def large():
    return load_digits_clutter_large(train=True), load_digits_clutter_large(train=False)


def _holds_digit(images: torch.Tensor, digits: torch.Tensor) -> torch.Tensor:
    """Whether each 16x16 image has an 8x8 window at least as bright as its digit everywhere."""
    windows = F.unfold(images.float(), 8)                         # [N, 64, positions]
    return (windows >= digits.float().reshape(len(digits), 64, 1)).all(1).any(1)


def test_sizes_test_set_holds_at_least_2000_images(large):
    train, test = large
    assert train.images.shape == (1500 * CLUTTER_LARGE_COPIES[True], 1, 16, 16)
    assert test.images.shape == (297 * CLUTTER_LARGE_COPIES[False], 1, 16, 16) and len(test) >= 2000
    for s in (train, test):
        assert s.images.dtype == torch.uint8 and int(s.images.max()) <= 16 and s.flip is False
    assert "2,079 images" in test.source and "digits_clutter_large" in test.source


def test_deterministic_and_renderings_differ(large):
    train, test = large
    again = load_digits_clutter_large(True), load_digits_clutter_large(False)
    assert torch.equal(train.images, again[0].images) and torch.equal(test.images, again[1].images)
    n = 297
    # Each rendering places the same digits elsewhere over other clutter: no two renderings share an image.
    for r in range(1, CLUTTER_LARGE_COPIES[False]):
        assert not torch.equal(test.images[:n], test.images[r * n:(r + 1) * n])
        assert (test.images[:n] != test.images[r * n:(r + 1) * n]).flatten(1).any(1).all()


def test_labels_and_digits_come_from_the_same_split(large):
    for s, train in zip(large, (True, False)):
        source = load_digits(train)
        copies = CLUTTER_LARGE_COPIES[train]
        assert torch.equal(s.labels, source.labels.repeat(copies))
        assert _holds_digit(s.images, source.images.repeat(copies, 1, 1, 1)).all()


def test_test_images_share_no_image_with_train_or_with_digits_clutter(large):
    rows = lambda images: {bytes(r.numpy()) for r in images.reshape(len(images), -1)}  # noqa: E731
    train, test = rows(large[0].images), rows(large[1].images)
    assert not train & test
    small = rows(load_digits_clutter(True).images) | rows(load_digits_clutter(False).images)
    assert not small & (train | test)


def test_statistics_close_to_the_fixed_normalisation(large):
    x = large[0].images.float() / 16
    assert x.mean().item() == pytest.approx(large[0].mean[0], abs=2e-3)
    assert x.std().item() == pytest.approx(large[0].std[0], abs=2e-3)


def test_is_a_dataset_name():
    assert build_config({}, ["data.dataset=digits_clutter_large"]).data.dataset == "digits_clutter_large"
    assert load_dataset("digits_clutter_large", train=False).images.shape[0] == 2079
