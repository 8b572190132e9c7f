"""nas/engine/zero_cost.py: each zero-cost proxy against a reference computed another way."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.engine import zero_cost


def test_synflow_of_a_linear_chain_is_its_depth_times_its_output():
    # R = 1^T |W2| |W1| 1 is homogeneous of degree 1 in each layer, so sum theta dR/dtheta = 2 R (Euler).
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5, bias=False), nn.Linear(5, 3, bias=False))
    w1, w2 = net[0].weight.detach().abs(), net[1].weight.detach().abs()
    expected = 2 * float(torch.ones(3).double() @ w2.double() @ w1.double() @ torch.ones(4).double())
    assert zero_cost.synflow(net, torch.randn(7, 4), torch.zeros(7, dtype=torch.long)) == pytest.approx(expected)
    assert (net[0].weight < 0).any()  # the network itself is left as it was


def test_naswot_is_the_log_det_of_agreements_counted_pair_by_pair():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x = torch.randn(5, 4)
    with torch.no_grad():
        h1 = net[1](net[0](x))
        h2 = net[3](net[2](h1))
    codes = torch.cat([h1 > 0, h2 > 0], dim=1)  # [5 images, 11 units]
    agree = torch.tensor([[float((codes[i] == codes[j]).sum()) for j in range(5)] for i in range(5)],
                         dtype=torch.float64)
    assert zero_cost.naswot(net, x, torch.zeros(5, dtype=torch.long)) == pytest.approx(
        float(torch.linalg.slogdet(agree)[1]))


def test_grad_norm_and_snip_match_the_softmax_regression_gradient():
    torch.manual_seed(2)
    net = nn.Linear(4, 3, bias=False)
    x, y = torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    # dL/dW of the mean cross-entropy: (softmax(W x) - onehot(y))^T x / B, written out
    grad = (F.softmax(x @ net.weight.detach().t(), dim=1) - F.one_hot(y, 3).float()).t() @ x / len(x)
    assert zero_cost.grad_norm(net, x, y) == pytest.approx(float(grad.norm()), rel=1e-5)
    assert zero_cost.snip(net, x, y) == pytest.approx(float((net.weight.detach() * grad).abs().sum()), rel=1e-5)
    assert net.weight.grad is None  # scored on a copy
