"""The arch step's exact memory savers: the fused straight-through gate and the frozen ReLU-conv."""
import copy

import pytest
import torch
import torch.nn as nn

import search_spaces
from nas import ChoiceLayer
from nas.layers.ops import ReLUConvBN, SepConv
from nas.layers.gates import ALL_OPS, GATE_RULES, SAMPLED_OP, StraightThroughBatchNorm2d


def reference(op, x, weights, index, rule=ALL_OPS):
    """GDAS's straight-through mix written with autograd ops (the official code's formulas)."""
    if rule == SAMPLED_OP:
        return weights[index] * op(x)  # DARTS-space MixedOp.forward_gdas
    return weights[index] * op(x) + (weights.sum() - weights[index])  # NB201 SearchCell.forward_gdas


def gated(op, x, weights, index, rule=ALL_OPS):
    """The choice layer's gate with ``op`` as the sampled op ``index`` of ``len(weights)`` ops."""
    ops = {f"op{k}": op if k == index else nn.Identity() for k in range(weights.shape[0])}
    return ChoiceLayer(ops, gdas_gate=rule)._straight_through(index, x, weights)


def _cases():
    nb201 = search_spaces.nb201.OPS
    darts = search_spaces.darts
    for name in nb201:
        yield f"nb201-{name}", lambda name=name: nb201[name](6, 6, 1, False, False)
    for name in darts.OP_NAMES:
        for stride in (1, 2):
            yield f"darts-{name}-s{stride}", lambda name=name, stride=stride: darts._search_op(name, 6, stride)
    # Affine BN with running statistics (discrete-network settings): the gate must update them alike.
    yield "relu-conv-bn-affine-tracked", lambda: ReLUConvBN(6, 6, 3, 1, 1, affine=True, track_running_stats=True)
    yield "sepconv-affine-tracked", lambda: SepConv(6, 6, 3, 1, 1, affine=True, track_running_stats=True)
    # Bare pools (the linear avg-pool gate, the recomputing max-pool gate).
    yield "avg-pool-s2-ceil", lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
    yield "max-pool-s1", lambda: nn.MaxPool2d(3, 1, 1)


CASES = dict(_cases())


def _run(op, x, weights, index, fused, rule=ALL_OPS):
    if fused:
        return gated(op, x, weights, index, rule)
    return reference(op, x, weights, index, rule)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("train_weights", [True, False])
@pytest.mark.parametrize("rule", GATE_RULES)
def test_gate_matches_the_autograd_formula(name, train_weights, rule):
    torch.manual_seed(0)
    op = CASES[name]().double()
    for p in op.parameters():
        if p.dim() == 1:  # non-trivial affine parameters
            nn.init.uniform_(p, 0.5, 1.5)
        p.requires_grad_(train_weights)
    x0 = torch.randn(4, 6, 8, 8, dtype=torch.double) * 2 + 0.5
    logits = torch.randn(5, dtype=torch.double)
    grads, outs, buffers = [], [], []
    for fused in (False, True):
        model = copy.deepcopy(op)
        x = x0.clone().requires_grad_(True)
        w = logits.clone().requires_grad_(True)
        soft = torch.softmax(w, 0)
        hard = torch.zeros_like(soft)
        hard[2] = 1.0
        weights = hard + (soft - soft.detach())
        out = _run(model, x, weights, 2, fused, rule)
        g = torch.randn_like(out, generator=torch.Generator().manual_seed(1))
        out.backward(g)
        outs.append(out.detach())
        grads.append([w.grad, x.grad] + [p.grad for p in model.parameters()])
        buffers.append([b.clone() for b in model.buffers()])
    torch.testing.assert_close(outs[1], outs[0])
    for fused, ref in zip(grads[1], grads[0]):
        if ref is None:
            assert fused is None
        else:
            torch.testing.assert_close(fused, ref)
    for fused, ref in zip(buffers[1], buffers[0]):
        torch.testing.assert_close(fused, ref)
    if rule == ALL_OPS or "none" not in name:  # h[i] * 0 gives no logit gradient under sampled_op
        assert grads[1][0].abs().sum() > 0  # the logits got a gradient


def _saved_bytes(fn):
    """Bytes of distinct tensors autograd saves for backward while ``fn`` runs."""
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


@pytest.mark.parametrize("name", ["nb201-nor_conv_3x3", "nb201-nor_conv_1x1", "nb201-avg_pool_3x3", "nb201-none",
                                  "avg-pool-s2-ceil", "max-pool-s1",
                                  "darts-sep_conv_3x3-s1", "darts-dil_conv_5x5-s2", "darts-max_pool_3x3-s1"])
@pytest.mark.parametrize("rule", GATE_RULES)
def test_gate_saves_no_more_than_the_op_itself(name, rule):
    torch.manual_seed(0)
    op = CASES[name]()
    op.requires_grad_(False)  # the arch step: weights frozen
    x = torch.randn(8, 6, 16, 16).relu().requires_grad_(True) + 0  # an activation, as in a cell
    weights = torch.zeros(5)
    weights[2] = 1.0
    weights.requires_grad_(True)
    alone = _saved_bytes(lambda: op(x))
    fused = _saved_bytes(lambda: gated(op, x, weights, 2, rule))
    formula = _saved_bytes(lambda: reference(op, x, weights, 2))
    assert fused <= alone + 1024  # at most a few per-channel statistics more
    if "none" not in name:
        out_bytes = op(x).numel() * 4
        assert formula >= alone + out_bytes  # the formula keeps the op's output as well


def test_the_batch_norm_is_a_plain_batch_norm_outside_a_gate():
    torch.manual_seed(0)
    bn = StraightThroughBatchNorm2d(6)
    plain = nn.BatchNorm2d(6)
    plain.load_state_dict(bn.state_dict())
    x = torch.randn(4, 6, 5, 5)
    torch.testing.assert_close(bn(x), plain(x))
    torch.testing.assert_close(bn.running_mean, plain.running_mean)
    assert isinstance(bn, nn.BatchNorm2d) and bn.gate is None


@pytest.mark.parametrize("make", [
    lambda: ReLUConvBN(6, 6, 3, 2, 1, affine=False, track_running_stats=False),
    lambda: SepConv(6, 8, 5, 1, 2, affine=True, track_running_stats=True),
    lambda: search_spaces.darts.OPS["dil_conv_3x3"](6, 1, False, False),
])
def test_frozen_relu_conv_matches_autograd_and_keeps_a_bool_mask(make):
    torch.manual_seed(0)
    op = make().double().requires_grad_(False)  # frozen weights, as in the arch step
    seq = op if isinstance(op, nn.Sequential) else op.op
    x0 = torch.randn(4, 6, 8, 8, dtype=torch.double)
    results = []
    for fused in (True, False):
        x = x0.clone().requires_grad_(True)
        h = x * 1.5  # an activation that needs a gradient
        out = op(h) if fused else nn.Sequential.forward(seq, h)
        out.backward(torch.ones_like(out) * torch.linspace(-1, 1, out.shape[-1], dtype=torch.double))
        results.append((out.detach(), x.grad))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])
    h = torch.randn(4, 6, 8, 8, requires_grad=True) * 1.0
    op = make().requires_grad_(False)
    seq = op if isinstance(op, nn.Sequential) else op.op
    assert _saved_bytes(lambda: op(h)) < _saved_bytes(lambda: nn.Sequential.forward(seq, h))


def test_trainable_weights_take_the_plain_path():
    op = ReLUConvBN(6, 6, 3, 1, 1)
    h = torch.randn(2, 6, 8, 8, requires_grad=True) * 1.0
    assert _saved_bytes(lambda: op(h)) == _saved_bytes(lambda: nn.Sequential.forward(op, h))
    op(h).sum().backward()
    assert op[1].weight.grad is not None


@pytest.mark.parametrize("name", ["nb201-skip_connect", "nb201-avg_pool_3x3", "nb201-nor_conv_3x3"])
def test_gate_matches_in_channels_last(name):
    torch.manual_seed(0)
    op = CASES[name]().to(memory_format=torch.channels_last)
    x0 = torch.randn(4, 6, 8, 8).contiguous(memory_format=torch.channels_last)
    grads = []
    for fused in (False, True):
        x = x0.clone().requires_grad_(True)
        w = torch.zeros(5)
        w[2] = 1.0
        w.requires_grad_(True)
        out = _run(copy.deepcopy(op), x, w, 2, fused)
        out.backward(torch.linspace(-1, 1, out.numel()).view_as(out).contiguous(memory_format=torch.channels_last))
        grads.append((w.grad, x.grad))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grads[1][1], grads[0][1])


class ConvBNReLU(nn.Module):
    """Names its BN ``final_norm`` although a ReLU follows it: the op's output is not the BN's."""

    def __init__(self, C: int = 6):
        super().__init__()
        self.conv = nn.Conv2d(C, C, 3, padding=1, bias=False)
        self.bn = StraightThroughBatchNorm2d(C, affine=True, track_running_stats=True)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))

    @property
    def final_norm(self):
        return self.bn


@pytest.mark.parametrize("rule", GATE_RULES)
def test_an_op_that_does_not_return_its_final_norm_gets_the_exact_gradient(rule):
    torch.manual_seed(0)
    op = ConvBNReLU().double()
    nn.init.uniform_(op.bn.weight, 0.5, 1.5)
    nn.init.uniform_(op.bn.bias, -0.5, 0.5)
    x0 = torch.randn(4, 6, 8, 8, dtype=torch.double)
    logits = torch.randn(3, dtype=torch.double)
    models = {"fused": copy.deepcopy(op), "reference": copy.deepcopy(op)}
    layer = ChoiceLayer({"a": nn.Identity(), "b": nn.Identity(), "op": models["fused"]}, gdas_gate=rule)
    for call in range(2):  # the first call decides (and reruns), the second uses the cached decision
        grads = {}
        for kind, model in models.items():
            w = logits.clone().requires_grad_(True)
            soft = torch.softmax(w, 0)
            weights = torch.zeros_like(soft).index_fill_(0, torch.tensor([2]), 1.0) + (soft - soft.detach())
            x = x0.clone().requires_grad_(True)
            out = layer._straight_through(2, x, weights) if kind == "fused" else reference(model, x, weights, 2, rule)
            out.backward(torch.linspace(-1, 1, out.numel(), dtype=torch.double).view_as(out))
            grads[kind] = [w.grad, x.grad, model.conv.weight.grad.clone(), model.bn.weight.grad.clone()]
            model.zero_grad()
        for got, ref in zip(grads["fused"], grads["reference"]):
            torch.testing.assert_close(got, ref)
        for got, ref in zip(models["fused"].buffers(), models["reference"].buffers()):
            torch.testing.assert_close(got, ref)  # one running-stat update per call, as the plain op
        assert layer._returns_final_norm == [None, None, False]


def test_the_fused_gate_is_kept_for_ops_that_return_their_final_norm():
    op = ReLUConvBN(6, 6, 3, 1, 1, affine=False, track_running_stats=False)
    layer = ChoiceLayer({"a": nn.Identity(), "b": nn.Identity(), "conv": op})
    weights = torch.tensor([0.0, 0.0, 1.0], requires_grad=True)
    layer._straight_through(2, torch.randn(2, 6, 5, 5), weights).sum().backward()
    assert layer._returns_final_norm == [None, None, True]


def test_an_op_that_stops_returning_its_final_norm_is_an_error():
    op = ConvBNReLU()
    op.forward = lambda x: op.bn(op.conv(x))  # returns the BN's output for now
    layer = ChoiceLayer({"a": nn.Identity(), "op": op})
    weights = torch.tensor([0.0, 1.0], requires_grad=True)
    layer._straight_through(1, torch.randn(2, 6, 5, 5), weights)
    op.forward = lambda x: torch.relu(op.bn(op.conv(x)))
    with pytest.raises(RuntimeError, match="final_norm"):
        layer._straight_through(1, torch.randn(2, 6, 5, 5), weights)


def test_a_trainable_bias_beside_a_frozen_conv_weight_gets_its_gradient():
    torch.manual_seed(0)
    seq = ReLUConvBN(6, 6, 3, 1, 1, affine=False, track_running_stats=False, conv_bias=True).double()
    seq[1].weight.requires_grad_(False)  # frozen weight, trainable bias
    x0 = torch.randn(4, 6, 8, 8, dtype=torch.double)
    grads = []
    for run in (seq, lambda h: nn.Sequential.forward(seq, h)):  # the op, then plain autograd
        x = x0.clone().requires_grad_(True)
        out = run(x * 1.5)
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=torch.double).view_as(out))
        grads.append((seq[1].bias.grad.clone(), x.grad))
        seq.zero_grad()
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
    assert grads[1][0].abs().sum() > 0
