"""Declared op traits: every space declares them, and what reads them follows the declaration, not the names."""
import pytest
import torch
import torch.nn as nn

import search_spaces
from nas.layers.choice import ChoiceLayer
from nas.layers.op_traits import LEARNED, PARAMETER_FREE, SKIP, ZERO, OpTraits, ops_with
from nas.layers.ops import Zero
from nas.spaces.space import SearchSpace, register_space

SPACES = search_spaces.names()


@pytest.mark.parametrize("name", SPACES)
def test_every_op_of_every_space_declares_its_traits(name):
    space = search_spaces.get(name)
    traits = space.op_traits()
    assert list(traits) == list(space.op_names)
    assert all(isinstance(t, OpTraits) for t in traits.values())
    assert all(t.parameter_free for t in traits.values() if t.zero or t.skip)


def test_builtin_declarations_keep_the_conventions():
    """The caps counted skip_connect / skip as skips and the pools as parameter-free; none is the zero op."""
    nb201, darts, mobilenet = (search_spaces.get(n).op_traits() for n in ("nb201", "darts", "mobilenet"))
    assert ops_with(nb201, zero=True) == ["none"] and ops_with(darts, zero=True) == ["none"]
    assert ops_with(mobilenet, zero=True) == []
    assert ops_with(nb201, skip=True) == ["skip_connect"] == ops_with(darts, skip=True)
    assert ops_with(mobilenet, skip=True) == ["skip"]
    assert ops_with(darts, parameter_free=True, zero=False) == ["max_pool_3x3", "avg_pool_3x3", "skip_connect"]
    assert ops_with(nb201, parameter_free=True, zero=False) == ["skip_connect", "avg_pool_3x3"]


def test_contradictory_traits_are_refused():
    with pytest.raises(ValueError, match="parameter_free"):
        OpTraits(zero=True)
    with pytest.raises(ValueError, match="zero and skip"):
        OpTraits(zero=True, parameter_free=True, skip=True)
    with pytest.raises(TypeError, match="unknown op trait"):
        ops_with({"a": LEARNED}, pool=True)


class _Undeclared(SearchSpace):
    name = "undeclared_test_space"
    op_names = ("conv", "cut")

    def op_traits(self):
        return {"conv": LEARNED}  # "cut" missing


def test_register_refuses_a_space_whose_declaration_misses_an_op():
    with pytest.raises(ValueError, match=r"missing \['cut'\]"):
        register_space(_Undeclared())
    assert "undeclared_test_space" not in search_spaces.names()


class Scale(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return self.factor * x


class Cut(nn.Module):
    """A zero op under another name and class, which must never run in a soft mixture."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return torch.zeros_like(x)


def test_choice_layer_handles_the_zero_op_by_its_declared_trait():
    cut = Cut()
    layer = ChoiceLayer({"double": Scale(2.0), "cut": cut, "triple": Scale(3.0)},
                        traits={"double": LEARNED, "cut": ZERO, "triple": LEARNED})
    x = torch.randn(2, 1, 3, 3)
    w = torch.tensor([0.2, 0.5, 0.3], requires_grad=True)
    out = layer(x, w)  # soft mixture: 0.2 * 2x + 0.3 * 3x, the cut never run
    torch.testing.assert_close(out, 1.3 * x)
    assert cut.calls == 0
    out.sum().backward()
    torch.testing.assert_close(w.grad, torch.stack([(2 * x).sum(), torch.tensor(0.0), (3 * x).sum()]))
    dropped = layer(x, w.detach(), ())  # a genotype that drops the edge runs the declared zero op
    assert cut.calls == 1 and torch.equal(dropped, torch.zeros_like(x))


def test_choice_layer_named_none_is_not_zero_unless_declared():
    """An op called `none` that is declared learned is run like any other op."""
    layer = ChoiceLayer({"none": Scale(2.0), "triple": Scale(3.0)}, traits={"none": LEARNED, "triple": LEARNED})
    x = torch.randn(2, 1, 3, 3)
    torch.testing.assert_close(layer(x, torch.tensor([0.5, 0.5])), 2.5 * x)
    with pytest.raises(ValueError, match="no zero op"):
        layer(x, torch.tensor([0.5, 0.5]), ())


def test_choice_layer_without_traits_reads_the_modules_declarations():
    layer = ChoiceLayer({"z": Zero(1, 1, 1), "skip": nn.Identity()})
    assert layer.traits == [ZERO, LEARNED]  # nn.Identity declares nothing: the default
    with pytest.raises(ValueError, match="missing"):
        ChoiceLayer({"z": Zero(1, 1, 1), "skip": nn.Identity()}, traits={"z": ZERO})
    assert PARAMETER_FREE.parameter_free and SKIP.skip
