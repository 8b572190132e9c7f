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


# --------------------------------------------------------------------------- derivation reads the traits

class _TrapSpace(SearchSpace):
    """One group of edges, argmax per edge. The zero op is `cut`, the pool `avg`, the skip `ident`;
    `none` and `max_pool_conv` are learned ops whose names would fool a name-based rule."""

    name = "trap_test_space"
    op_names = ("cut", "ident", "avg", "none", "max_pool_conv")
    TRAITS = {"cut": ZERO, "ident": SKIP, "avg": PARAMETER_FREE, "none": LEARNED, "max_pool_conv": LEARNED}

    def op_traits(self):
        return dict(self.TRAITS)

    def derive_genotype(self, probabilities, rule=None):
        return tuple(self.op_names[k] for k in probabilities["cell"].argmax(dim=-1).tolist())

    def genotype_edges(self, genotype):
        return [("cell", e, op) for e, op in enumerate(genotype)]


def _probs(rows):
    """Per edge: a strongest op and a runner-up (the names), the other ops weaker."""
    names = _TrapSpace.op_names
    p = torch.full((len(rows), len(names)), 0.01, dtype=torch.float64)
    for e, (first, p1, second, p2) in enumerate(rows):
        p[e, names.index(first)], p[e, names.index(second)] = p1, p2
    return {"cell": p}


def test_caps_count_ops_by_their_traits_not_their_names():
    from nas.spaces.derive import derive_with_caps
    space = _TrapSpace()
    probs = _probs([("ident", 0.6, "max_pool_conv", 0.3),
                    ("avg", 0.5, "none", 0.4),
                    ("ident", 0.9, "avg", 0.05),
                    ("none", 0.7, "ident", 0.2),
                    ("max_pool_conv", 0.8, "avg", 0.1),
                    ("cut", 0.7, "none", 0.2)])
    assert derive_with_caps(space, probs) == ("ident", "avg", "ident", "none", "max_pool_conv", "cut")
    # max_skip=1: the weaker ident (0.6, edge 0) goes; `none` and `max_pool_conv` are not skips.
    assert derive_with_caps(space, probs, max_skip=1) == ("max_pool_conv", "avg", "ident", "none", "max_pool_conv",
                                                         "cut")
    # max_parameter_free=1: of ident 0.6, avg 0.5, ident 0.9 only the strongest stays (the zero op is not
    # counted); the learned `none` and `max_pool_conv` are never capped.
    assert derive_with_caps(space, probs, max_parameter_free=1) == ("max_pool_conv", "none", "ident", "none",
                                                                   "max_pool_conv", "cut")
    # max_skip=0 removes both idents; the parameter-free avg stays.
    assert derive_with_caps(space, probs, max_skip=0) == ("max_pool_conv", "avg", "avg", "none", "max_pool_conv",
                                                         "cut")


def test_exclude_zero_excludes_the_declared_zero_op_whatever_its_name():
    from nas.spaces.derive import derive_exclusions, derive_with_caps
    space = _TrapSpace()
    assert derive_exclusions(space, (), exclude_zero=True) == ("cut",)
    assert derive_exclusions(space, ("ident",), exclude_zero=True) == ("ident", "cut")
    assert derive_exclusions(space, ("cut",), exclude_zero=True) == ("cut",)
    assert derive_exclusions(search_spaces.get("mobilenet"), (), exclude_zero=True) == ()  # it has no zero op
    assert derive_exclusions(search_spaces.get("nb201"), (), exclude_zero=True) == ("none",)
    probs = _probs([("cut", 0.7, "none", 0.2), ("cut", 0.6, "avg", 0.3)])
    genotype = derive_with_caps(space, probs, exclude=derive_exclusions(space, (), exclude_zero=True))
    assert genotype == ("none", "avg")  # the learned op called `none` is derivable


# --------------------------------------------------------------------------- declared builder arguments

def test_register_refuses_arguments_that_do_not_match_the_builder():
    from nas.spaces.space import check_arguments

    class Wrong(type(search_spaces.get("nb201"))):
        name = "wrong_arguments_test_space"
        supernet_arguments = frozenset({"C", "N", "gdas_gate", "aux_skip"})  # bn_layout left out

    with pytest.raises(ValueError, match=r"undeclared \['bn_layout'\]"):
        register_space(Wrong())

    class Extra(type(search_spaces.get("darts"))):
        name = "extra_arguments_test_space"
        network_arguments = frozenset({"C", "N", "auxiliary", "drop_path_prob", "input_size"})

    with pytest.raises(ValueError, match=r"not taken \['input_size'\]"):
        check_arguments(Extra())
    for name in SPACES:
        check_arguments(search_spaces.get(name))


@pytest.mark.parametrize("name", SPACES)
def test_builders_get_exactly_the_declared_arguments_the_config_sets(name):
    from nas.cli.build import space_arguments
    from nas.config import build_config
    space = search_spaces.get(name)
    cfg = build_config({}, [f"model.space={name}", "model.C=8", "model.N=1"])
    supernet_args = space_arguments(cfg, space, image_size=16)
    assert set(supernet_args) == space.supernet_arguments - {"head_width"}  # no config key sets head_width
    assert (supernet_args["C"], supernet_args["N"]) == (8, 1)
    assert supernet_args.get("input_size", 16) == 16
    network_args = space_arguments(cfg, space, network=True, image_size=16)
    assert set(network_args) == space.network_arguments - {"head_width"}
    net = space.build_supernet(mode="gdas", num_classes=3, in_channels=3, **supernet_args)
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 3)


@pytest.mark.parametrize("override, space, message", [
    ("model.bn_layout=batch_stats", "mobilenet",
     "config key 'model.bn_layout' is not available in the mobilenet space (darts and nb201 have it); "
     "set model.bn_layout=official"),
    ("model.edge_normalization=true", "nb201",
     "config key 'model.edge_normalization' is not available in the nb201 space (only darts has it); "
     "set model.edge_normalization=false"),
])
def test_a_setting_the_space_lacks_is_a_one_line_error(tmp_path, capsys, override, space, message):
    import train_search
    rc = train_search.main(["--out", str(tmp_path / "run"), "data.dataset=synthetic", "data.synthetic_size=32",
                            "data.image_size=8", "model.C=4", "model.N=1", "search.epochs=1",
                            f"model.space={space}", override])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "Traceback" not in err
    assert err.splitlines()[-1].endswith(message), err


# --------------------------------------------------------------------------- a space switched on the command line

def test_switching_the_space_on_the_command_line_drops_the_files_space_keys(tmp_path):
    from nas.cli.build import space_arguments
    from nas.config import ModelConfig, load_config
    from nas.spaces.derive import derive_exclusions
    path = tmp_path / "nb201.yaml"
    path.write_text("model:\n  space: nb201\n  C: 8\n  N: 2\n  derive_exclude: [none]\n  exclude_zero: true\n"
                    "  bn_layout: batch_stats\n  max_skip: 1\nsearch:\n  epochs: 3\n  nb201_benchmark: nb.pth\n")
    same = load_config(path, ["model.space=nb201"])
    assert (same.model.C, same.model.N, same.model.derive_exclude) == (8, 2, ["none"])
    assert same.model.bn_layout == "batch_stats" and same.search.nb201_benchmark == "nb.pth"
    other = load_config(path, ["model.space=mobilenet", "model.C=24"])  # nb201_benchmark would be refused here
    assert (other.model.C, other.model.N) == (24, ModelConfig.N)  # the command line's C, the default N
    assert other.model.derive_exclude == [] and other.model.bn_layout == "official"
    assert other.search.nb201_benchmark == "" and other.search.epochs == 3
    assert other.model.exclude_zero and other.model.max_skip == 1  # read by trait: meaningful in any space
    mobilenet = search_spaces.get("mobilenet")
    assert derive_exclusions(mobilenet, other.model.derive_exclude, other.model.exclude_zero) == ()
    space_arguments(other, mobilenet)  # nothing nb201-only left to refuse


@pytest.mark.parametrize("space, excluded", [("nb201", ("none",)), ("darts", ("none",)), ("mobilenet", ())])
def test_quickstart_with_another_space_derives_without_that_spaces_zero_op(space, excluded):
    from nas.config import load_config
    from nas.spaces.derive import derive_exclusions
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
    cfg = load_config(path, [f"model.space={space}"])
    assert derive_exclusions(search_spaces.get(space), cfg.model.derive_exclude, cfg.model.exclude_zero) == excluded
    # The file's N is the nb201 macro's; switching space falls back to the default N (5), not the file's.
    assert cfg.model.N == (load_config(path).model.N if space == "nb201" else 5)


# --------------------------------------------------------------------------- costs read the traits

class _OneEdge(__import__("nas").Supernet):
    """A supernet of one choice layer: a 1x1 conv called `none` (learned) and a declared zero op `cut`."""

    def __init__(self):
        from nas import Architecture
        super().__init__(Architecture({"edge": (1, 3)}, ["none", "cut", "conv3"]), "gdas")
        self.layer = ChoiceLayer({"none": nn.Conv2d(2, 2, 1), "cut": Cut(), "conv3": nn.Conv2d(2, 2, 3, padding=1)},
                                 traits={"none": LEARNED, "cut": ZERO, "conv3": LEARNED})
        self.head = nn.Linear(2, 3)

    def forward_sample(self, x, sample):
        index = None if sample.indices is None else sample.indices["edge"][0]
        return self.head(self.layer(x, sample.coefficients["edge"][0], index).mean(dim=(2, 3)))

    def choice_layers(self):
        return [("edge", 0, self.layer)]


@pytest.mark.parametrize("metric", ["params", "flops"])
def test_cost_tables_zero_only_the_declared_zero_op(metric):
    """The learned op called `none` costs what it measures; the declared zero op `cut` costs 0."""
    from nas.cost.objective import cost_tables
    net = _OneEdge()
    table = cost_tables(net, (2, 4, 4), metric).tables["edge"][0].tolist()
    conv1, conv3 = net.layer.ops[0], net.layer.ops[2]
    if metric == "params":
        expected = [sum(p.numel() for p in conv1.parameters()), 0, sum(p.numel() for p in conv3.parameters())]
        assert table == expected  # 6, 0, 38
    else:
        assert table[1] == 0 and table[0] > 0 and table[2] == pytest.approx(9 * table[0], rel=0.01)
