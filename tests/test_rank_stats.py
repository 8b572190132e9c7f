"""The experiment's statistics (nas/rank_stats.py) against hand computations and a second implementation."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from nas.experiment.rank_stats import kendall_tau_b, pooled_standard_error, standard_error


def test_kendall_tau_b_on_hand_values():
    # 6 pairs, one discordant (items 2 and 3): (5 - 1) / 6.
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # Ties: x ties items 2,3; y ties items 3,4. C = 4, D = 0, n0 = 6, n1 = n2 = 1: 4 / sqrt(5 * 5).
    assert kendall_tau_b([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)
    # A pair tied in both lists counts in n1 and n2: C = 2, D = 0, n1 = n2 = 1 of 3 pairs: 2 / 2.
    assert kendall_tau_b([1, 2, 2], [5, 6, 6]) == pytest.approx(1.0)


def test_kendall_tau_b_undefined_and_bad_input():
    assert kendall_tau_b([1, 1, 1], [1, 2, 3]) is None  # every x tied
    assert kendall_tau_b([4.0], [2.0]) is None
    with pytest.raises(ValueError):
        kendall_tau_b([1, 2], [1, 2, 3])


def _tau_b_reference(x: list[float], y: list[float]) -> float:
    """tau-b as the cosine of the pairwise sign vectors (float64), a second way to compute it."""
    pairs = list(itertools.combinations(range(len(x)), 2))
    sx = torch.tensor([x[i] - x[j] for i, j in pairs], dtype=torch.float64).sign()
    sy = torch.tensor([y[i] - y[j] for i, j in pairs], dtype=torch.float64).sign()
    return float((sx * sy).sum() / (sx.square().sum() * sy.square().sum()).sqrt())


def test_kendall_tau_b_matches_the_sign_vector_form_with_many_ties():
    g = torch.Generator().manual_seed(0)
    for n in (3, 7, 20):
        for _ in range(20):
            x = torch.randint(4, (n,), generator=g).tolist()  # few values: many ties
            y = torch.randint(4, (n,), generator=g).tolist()
            if len(set(x)) > 1 and len(set(y)) > 1:
                assert kendall_tau_b(x, y) == pytest.approx(_tau_b_reference(x, y), abs=1e-12)


def test_standard_errors_on_hand_values():
    assert standard_error([1.0, 2.0, 6.0]) == pytest.approx(math.sqrt(7) / math.sqrt(3))
    assert standard_error([5.0]) is None
    # Variances 2 and 8 (one degree of freedom each): pooled 5; two runs per cell: sqrt(5 / 2).
    assert pooled_standard_error([[1.0, 3.0], [4.0, 8.0]]) == pytest.approx(math.sqrt(2.5))
    # Variances 2 (1 dof) and 9 (2 dof): pooled 20 / 3; mean group size 2.5.
    assert pooled_standard_error([[1.0, 3.0], [0.0, 3.0, 6.0]]) == pytest.approx(math.sqrt(20 / 3 / 2.5))
    assert pooled_standard_error([[1.0], [2.0]]) is None
