"""Gumbel sampling: exact categorical argmax, straight-through gradients, numerics, schedules."""
import math

import pytest
import torch

from nas import gumbel_softmax, sample_gumbel, tau_at
from nas.sampling.gumbel import TAU_SCHEDULES, gumbel_softmax_sample

# 99.99% quantile of chi-square with 4 degrees of freedom (5 categories).
CHI2_4DOF_P9999 = 23.513


@pytest.mark.parametrize("tau", [0.1, 1.0, 10.0])
def test_hard_sample_frequencies_match_softmax(tau):
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0, 0.5])
    n = 200_000
    g = torch.Generator().manual_seed(123)
    samples = gumbel_softmax(logits.expand(n, 5), tau=tau, hard=True, generator=g)
    counts = samples.sum(0)
    expected = torch.softmax(logits, -1) * n
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < CHI2_4DOF_P9999, (tau, counts, expected)


def test_argmax_is_not_softmax_of_scaled_noise():
    # A sample's argmax must not depend on tau (Gumbel-max), even where softmax saturates.
    logits = torch.tensor([0.3, 0.1, -0.2])
    for tau in (1e-3, 1.0, 100.0):
        g = torch.Generator().manual_seed(7)
        _, _, index = gumbel_softmax_sample(logits.expand(1000, 3), tau=tau, generator=g)
        g.manual_seed(7)
        reference = (logits + sample_gumbel((1000, 3), generator=g)).argmax(-1)
        assert torch.equal(index, reference)


def test_hard_sample_is_exactly_one_hot():
    logits = torch.randn(1000, 7)
    y = gumbel_softmax(logits, tau=0.5, hard=True, generator=torch.Generator().manual_seed(0))
    assert set(y.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(y.sum(-1), torch.ones(1000))


def test_straight_through_gradient_equals_soft_gradient():
    logits = torch.randn(16, 5, requires_grad=True)
    weights = torch.randn(16, 5)
    hard = gumbel_softmax(logits, tau=0.7, hard=True, generator=torch.Generator().manual_seed(3))
    (grad_hard,) = torch.autograd.grad((hard * weights).sum(), logits)
    soft = gumbel_softmax(logits, tau=0.7, hard=False, generator=torch.Generator().manual_seed(3))
    (grad_soft,) = torch.autograd.grad((soft * weights).sum(), logits)
    assert grad_hard.abs().sum() > 0
    torch.testing.assert_close(grad_hard, grad_soft)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("tau", [0.01, 1.0, 10.0])
def test_finite_at_extreme_logits(dtype, hard, tau):
    logits = torch.tensor([[1e4, -1e4, 0.0, 1e4, -3e4]] * 4096, dtype=dtype).requires_grad_()
    y = gumbel_softmax(logits, tau=tau, hard=hard, generator=torch.Generator().manual_seed(1))
    assert y.dtype == dtype
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.float().sum(-1), torch.ones(4096), atol=1e-2, rtol=0)
    (grad,) = torch.autograd.grad((y.float() * torch.arange(5.0)).sum(), logits)
    assert torch.isfinite(grad).all()
    # The two logits of 1e4 win every draw: -1e4 and -3e4 never.
    winners = y.float().argmax(-1)
    assert set(winners.unique().tolist()) <= {0, 3}


def test_noise_is_finite_and_bounded():
    g = torch.Generator().manual_seed(0)
    noise = sample_gumbel((4_000_000,), generator=g)
    assert noise.dtype == torch.float32
    assert torch.isfinite(noise).all()
    # -log(-log(u)) for u in [tiny, 1 - eps/2] of float32.
    assert noise.min() >= -math.log(-math.log(torch.finfo(torch.float32).tiny)) - 1e-4
    assert noise.max() <= 17.0
    # Gumbel(0, 1): mean is the Euler-Mascheroni constant, variance pi^2 / 6.
    assert abs(noise.mean().item() - 0.5772) < 0.005
    assert abs(noise.var().item() - math.pi ** 2 / 6) < 0.01


def test_generator_makes_samples_reproducible():
    logits = torch.randn(8, 5)
    a = gumbel_softmax(logits, tau=1.0, generator=torch.Generator().manual_seed(42))
    b = gumbel_softmax(logits, tau=1.0, generator=torch.Generator().manual_seed(42))
    c = gumbel_softmax(logits, tau=1.0, generator=torch.Generator().manual_seed(43))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_bad_tau_is_refused():
    with pytest.raises(ValueError):
        gumbel_softmax(torch.zeros(3), tau=0.0)


@pytest.mark.parametrize("schedule", sorted(TAU_SCHEDULES))
def test_schedule_endpoints_and_monotone(schedule):
    values = [tau_at(schedule, e, 50, 10.0, 0.1) for e in range(50)]
    assert values[0] == pytest.approx(10.0)
    assert values[-1] == pytest.approx(10.0 if schedule == "constant" else 0.1)
    assert all(a >= b - 1e-12 for a, b in zip(values, values[1:]))


def test_schedule_shapes():
    # GDAS linear: equal steps; FBNet exponential: equal ratios.
    linear = [tau_at("linear", e, 11, 10.0, 0.0 + 1e-9) for e in range(11)]
    assert linear[5] == pytest.approx(5.0, abs=1e-6)
    exp = [tau_at("exponential", e, 5, 16.0, 1.0) for e in range(5)]
    assert exp == pytest.approx([16.0, 8.0, 4.0, 2.0, 1.0])
    assert tau_at("cosine", 5, 11, 10.0, 0.0) == pytest.approx(5.0)
