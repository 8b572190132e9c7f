"""The experiment's statistics (nas/rank_stats.py) against hand computations and a second implementation."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from nas.experiment.rank_stats import kendall_tau_b, pooled_standard_error, reliability_of_means, standard_error


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


def test_reliability_of_means_on_hand_values():
    # Cells [1, 3] and [5, 7]: MSW = 2, means 2 and 6 around 4, MSB = 2 * (4 + 4) / 1 = 16: (16 - 2) / 16.
    assert reliability_of_means([[1.0, 3.0], [5.0, 7.0]]) == pytest.approx(14 / 16)
    # Equal means: all the spread is noise, MSB = 0, undefined rather than a reliability of -inf.
    assert reliability_of_means([[1.0, 3.0], [3.0, 1.0]]) is None
    # Means 2 and 3 with MSW = 2: MSB = 2 * 2 * 0.25 = 1 < MSW, an honest negative estimate.
    assert reliability_of_means([[1.0, 3.0], [2.0, 4.0]]) == pytest.approx((1 - 2) / 1)
    assert reliability_of_means([[1.0], [2.0]]) is None  # no retraining noise measured
    assert reliability_of_means([[1.0, 2.0]]) is None  # one cell: nothing to rank


def test_reliability_equals_the_mean_squares_form_for_equal_sizes():
    g = torch.Generator().manual_seed(1)
    groups = [(torch.randn(3, generator=g) + float(i)).tolist() for i in range(5)]
    msb = 3 * torch.tensor([sum(x) / 3 for x in groups], dtype=torch.float64).var().item()
    msw = sum(torch.tensor(x, dtype=torch.float64).var().item() for x in groups) / 5
    assert reliability_of_means(groups) == pytest.approx((msb - msw) / msb)


def test_reliability_with_unequal_retraining_counts_matches_theory():
    # Cells retrained 2 or 4 times (3 on average, as when some retrainings are missing): the n0
    # correction and Spearman-Brown to k = 3 must still recover sb^2 / (sb^2 + sw^2 / 3).
    g = torch.Generator().manual_seed(2)
    groups = []
    for i in range(4000):
        true_acc = torch.randn((), generator=g, dtype=torch.float64)
        groups.append((true_acc + torch.randn(2 if i % 2 else 4, generator=g, dtype=torch.float64)).tolist())
    assert reliability_of_means(groups) == pytest.approx(1 / (1 + 1 / 3), abs=0.03)


@pytest.mark.parametrize("between_std, noise_std", [(1.0, 1.0), (0.5, 2.0), (2.0, 0.5)])
def test_reliability_predicts_the_correlation_of_two_independent_sets_of_retrainings(between_std, noise_std):
    # Simulated cells with a known true spread and retraining noise, 3 retrainings per set. The
    # reliability from the first set must match (a) the theory sb^2 / (sb^2 + sw^2 / 3) and (b) the
    # Pearson correlation of the cell means of that set with the means of 3 other retrainings.
    g = torch.Generator().manual_seed(0)
    cells, k = 4000, 3
    true_acc = between_std * torch.randn(cells, 1, generator=g, dtype=torch.float64)
    first = true_acc + noise_std * torch.randn(cells, k, generator=g, dtype=torch.float64)
    second = true_acc + noise_std * torch.randn(cells, k, generator=g, dtype=torch.float64)
    measured = reliability_of_means(first.tolist())
    theory = between_std ** 2 / (between_std ** 2 + noise_std ** 2 / k)
    repeat = torch.corrcoef(torch.stack([first.mean(1), second.mean(1)]))[0, 1].item()
    assert measured == pytest.approx(theory, abs=0.03)
    assert measured == pytest.approx(repeat, abs=0.04)
