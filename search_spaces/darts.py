"""The DARTS cell space (Liu et al., ICLR 2019), as DARTS's own code defines it.

A cell has two inputs (states 0 and 1: the outputs of the two previous cells,
``c_{k-2}`` and ``c_{k-1}``) and four intermediate nodes (states 2..5). Node
``s`` has an edge from every earlier state, 14 edges in all, in logit row order
``2<-0, 2<-1, 3<-0, 3<-1, 3<-2, 4<-0, ..., 5<-4``; the cell outputs the
concatenation of its four nodes. Each edge carries one of 8 ops. A reduction
cell runs its edges from the two inputs at stride 2. Two logit tables, ``normal``
and ``reduce`` [14, 8], are each shared by every cell of their kind.

The macro network is stem (3x3 conv to 3C, BN) -> 3N + 2 cells, with
reductions (width doubled, resolution halved) at cells N and 2N + 1 ->
global pool -> linear. The supernet is DARTS's model_search.py ``Network``
(``bn_layout`` says where BNs keep running statistics). GDAS's own search model
for this space (``NASNetworkGDAS``) differs in its macro: 3N cells instead of
3N + 2, BN + ReLU before the global pool, and a bias in the 1x1 preprocessing
convs; this supernet follows DARTS there. A derived cell keeps two incoming edges per node; its
genotype is DARTS's ``Genotype`` record and prints as DARTS prints it::

    Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ...], normal_concat=[2, 3, 4, 5],
             reduce=[('max_pool_3x3', 0), ...], reduce_concat=[2, 3, 4, 5])

where edge ``2i`` and ``2i + 1`` feed node ``i + 2`` and the number is the input state.
"""
from __future__ import annotations

import ast
from collections import namedtuple
from typing import Any, Callable

import torch
import torch.nn as nn
from timm.layers import drop_path

from nas.sampling.architecture import Architecture, ArchSample
from nas.layers.choice import ChoiceLayer
from nas.utils.errors import UserError
from nas.layers.ops import add_all, DilConv, FactorizedReduce, PoolBN, ReLUConvBN, SepConv, Zero
from nas.layers.op_traits import LEARNED, PARAMETER_FREE, SKIP, ZERO, OpTraits
from nas.layers.gates import SAMPLED_OP, StraightThroughBatchNorm2d
from nas.spaces.space import SearchSpace, register_space
from nas.layers.supernet import Supernet
from nas.layers.timm_head import TimmClassifier, global_pool as timm_global_pool

OP_NAMES = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
            "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")

# op name -> builder(C, stride, affine, track_running_stats). Every op keeps the width C.
OPS: dict[str, Callable[..., nn.Module]] = {
    "none": lambda C, stride, affine, track: Zero(C, C, stride),
    "max_pool_3x3": lambda C, stride, affine, track: nn.MaxPool2d(3, stride=stride, padding=1),
    "avg_pool_3x3": lambda C, stride, affine, track: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "skip_connect": lambda C, stride, affine, track: nn.Identity() if stride == 1 else FactorizedReduce(
        C, C, affine=affine, track_running_stats=track),
    "sep_conv_3x3": lambda C, stride, affine, track: SepConv(C, C, 3, stride, 1, affine, track),
    "sep_conv_5x5": lambda C, stride, affine, track: SepConv(C, C, 5, stride, 2, affine, track),
    "dil_conv_3x3": lambda C, stride, affine, track: DilConv(C, C, 3, stride, 2, 2, affine, track),
    "dil_conv_5x5": lambda C, stride, affine, track: DilConv(C, C, 5, stride, 4, 2, affine, track),
}
# What each op is (derivation caps and exclusions, costs, soft mixtures read these, not the names).
# A strided skip_connect is a FactorizedReduce with 1x1 convs; DARTS's caps (P-DARTS's max_skip) still
# count it as a skip connection and a parameter-free op, as they count the op by what it stands for.
OP_TRAITS: dict[str, OpTraits] = {
    "none": ZERO,
    "max_pool_3x3": PARAMETER_FREE,
    "avg_pool_3x3": PARAMETER_FREE,
    "skip_connect": SKIP,
    "sep_conv_3x3": LEARNED,
    "sep_conv_5x5": LEARNED,
    "dil_conv_3x3": LEARNED,
    "dil_conv_5x5": LEARNED,
}

NUM_NODES = 4  # intermediate nodes, states 2..5
EDGES = [(to, j) for to in range(2, NUM_NODES + 2) for j in range(to)]  # (to state, from state), logit row order
GROUPS = ("normal", "reduce")
STEM_MULTIPLIER = 3
DERIVATION_RULES = ("darts", "gdas")

# GDAS arch step: the unsampled ops get no gradient, as GDAS's DARTS-space search cell
# (``MixedOp.forward_gdas``: ``op_i(x) * h[i]``) computes it.
GDAS_GATE = SAMPLED_OP

Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")

PUBLISHED: dict[str, Genotype] = {
    # DARTS (first order), Liu et al. 2019, genotypes.py.
    "DARTS_V1": Genotype(
        normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
                ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
        normal_concat=[2, 3, 4, 5],
        reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
                ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
        reduce_concat=[2, 3, 4, 5]),
    # DARTS (second order): the paper's CIFAR-10 cell, 3.3M parameters.
    "DARTS_V2": Genotype(
        normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
                ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
        normal_concat=[2, 3, 4, 5],
        reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
                ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
        reduce_concat=[2, 3, 4, 5]),
    # GDAS, Dong & Yang, CVPR 2019 (D-X-Y's genotypes.py, "search by normal and reduce").
    "GDAS_V1": Genotype(
        normal=[("skip_connect", 0), ("skip_connect", 1), ("skip_connect", 0), ("sep_conv_5x5", 2),
                ("sep_conv_3x3", 3), ("skip_connect", 0), ("sep_conv_5x5", 4), ("sep_conv_3x3", 3)],
        normal_concat=[2, 3, 4, 5],
        reduce=[("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("sep_conv_5x5", 2), ("sep_conv_5x5", 1),
                ("dil_conv_5x5", 2), ("sep_conv_3x3", 1), ("sep_conv_5x5", 0), ("sep_conv_5x5", 1)],
        reduce_concat=[2, 3, 4, 5]),
}


# --------------------------------------------------------------------------- genotype text

def format_genotype(genotype: Genotype) -> str:
    """DARTS's string of a genotype: ``str()`` of the namedtuple, with plain ints and lists."""
    cells = {kind: [(str(op), int(j)) for op, j in getattr(genotype, kind)] for kind in GROUPS}
    return str(Genotype(normal=cells["normal"], normal_concat=[int(s) for s in genotype.normal_concat],
                        reduce=cells["reduce"], reduce_concat=[int(s) for s in genotype.reduce_concat]))


_EXAMPLE = format_genotype(PUBLISHED["DARTS_V2"])


MAX_GENOTYPE_CHARS = 4096  # the longest published DARTS genotype string is about 600 characters


def parse_genotype(text: str) -> Genotype:
    """Parses a ``Genotype(...)`` string without evaluating it.

    The text is parsed with ``ast``; only a call of ``Genotype`` whose arguments
    are literals (or ``range(a, b)`` for a concat, as DARTS prints them) is accepted.

    Raises:
        UserError: one line naming what is wrong and showing the expected form.
    """
    text = str(text).strip()
    shown = " ".join(text.split())
    shown = shown if len(shown) <= 80 else shown[:77] + "..."

    def bad(why: str) -> UserError:
        return UserError(f"malformed DARTS genotype {shown!r}: {why}; expected e.g. {_EXAMPLE}")

    if len(text) > MAX_GENOTYPE_CHARS:  # ast.parse of a huge (or deeply nested) text can exhaust memory
        raise bad(f"it is {len(text):,} characters long; a genotype is at most {MAX_GENOTYPE_CHARS:,}")
    try:
        call = ast.parse(text, mode="eval").body
    except (SyntaxError, MemoryError, RecursionError, ValueError):
        raise bad("not a Genotype(...) call (invalid syntax)") from None
    func = getattr(call, "func", None)
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    if not isinstance(call, ast.Call) or name != "Genotype":
        raise bad("not a Genotype(...) call")
    if len(call.args) > len(Genotype._fields) or any(isinstance(a, ast.Starred) for a in call.args):
        raise bad(f"Genotype takes the fields {', '.join(Genotype._fields)}")
    nodes = dict(zip(Genotype._fields, call.args))
    for keyword in call.keywords:
        if keyword.arg not in Genotype._fields:
            raise bad(f"unknown field {keyword.arg!r} (fields: {', '.join(Genotype._fields)})")
        if keyword.arg in nodes:
            raise bad(f"field {keyword.arg!r} given twice")
        nodes[keyword.arg] = keyword.value
    for field in Genotype._fields:
        if field not in nodes:
            raise bad(f"missing field {field!r}")
    values = {field: _literal(node, field, bad) for field, node in nodes.items()}
    for kind in GROUPS:
        _check_cell(values[kind], kind, bad)
        _check_concat(values[kind + "_concat"], kind + "_concat", bad)
    return Genotype(**{field: (list(map(tuple, values[field])) if field in GROUPS else list(values[field]))
                       for field in Genotype._fields})


def _literal(node: ast.AST, field: str, bad: Callable[[str], UserError]) -> Any:
    # range(a, b): DARTS prints a concat it built with range() this way.
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range"
            and not node.keywords and 1 <= len(node.args) <= 3):
        try:  # kept a range, not listed, until _check_concat has bounded it
            return range(*(ast.literal_eval(a) for a in node.args))
        except (ValueError, TypeError):
            raise bad(f"field {field!r} is a range() of non-integers") from None
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError):
        raise bad(f"field {field!r} is not a literal list") from None


def _check_cell(pairs: Any, field: str, bad: Callable[[str], UserError]) -> None:
    if not isinstance(pairs, (list, tuple)):
        raise bad(f"{field!r} must be a list of (op, input) pairs")
    if len(pairs) != 2 * NUM_NODES:
        raise bad(f"{field!r} has {len(pairs)} edges, must be {2 * NUM_NODES} (2 per node, {NUM_NODES} nodes)")
    for e, pair in enumerate(pairs):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str)
                and isinstance(pair[1], int) and not isinstance(pair[1], bool)):
            raise bad(f"edge {e} of {field!r} is {pair!r}, not an ('op', input) pair")
        op, j = pair
        if op not in OP_NAMES:
            raise bad(f"unknown op {op!r} in {field!r} (DARTS ops: {', '.join(OP_NAMES)})")
        node = e // 2 + 2
        if not 0 <= j < node:
            raise bad(f"edge {e} of {field!r} feeds node {node} from input {j}, "
                      f"out of range (inputs 0..{node - 1})")


def _check_concat(concat: Any, field: str, bad: Callable[[str], UserError]) -> None:
    nodes = range(2, NUM_NODES + 2)
    if (not isinstance(concat, (list, tuple, range)) or not concat
            or not all(isinstance(s, int) and not isinstance(s, bool) and s in nodes for s in concat)
            or len(set(concat)) != len(concat)):
        raise bad(f"{field!r} must list distinct nodes among {list(nodes)}, got {concat!r}")


# --------------------------------------------------------------------------- derivation

def derive_genotype(probabilities: dict[str, torch.Tensor], rule: str = "darts") -> Genotype:
    """The discrete genotype of per-group probabilities ``[14, 8]``.

    Rules (``DERIVATION_RULES``), applied to each node over its incoming edges;
    ``none`` is never chosen, and ties go to the lower input, then the lower op:

    * ``darts`` (DARTS's ``genotype()``): keep the two inputs whose strongest
      non-``none`` op is strongest, each with that op. The two inputs differ.
    * ``gdas`` (GDAS's code): rank every (input, non-``none`` op) pair by its
      probability and keep the best two; both may come from the same input.

    The pairs of a node are listed strongest first, as both codes list them.

    Args:
        probabilities: ``{"normal": [14, 8], "reduce": [14, 8]}`` tensors or nested lists.
        rule: ``darts`` or ``gdas``.
    """
    if rule not in DERIVATION_RULES:
        raise UserError(f"unknown derivation rule {rule!r}; choose from {', '.join(DERIVATION_RULES)}")
    pick = _darts_pairs if rule == "darts" else _gdas_pairs
    cells = {}
    for group in GROUPS:
        probs = torch.as_tensor(probabilities[group]).detach().double().cpu()
        if probs.shape != (len(EDGES), len(OP_NAMES)):
            raise ValueError(f"probabilities[{group!r}] has shape {tuple(probs.shape)}, "
                             f"expected ({len(EDGES)}, {len(OP_NAMES)})")
        rows = probs.tolist()
        cells[group] = [pair for to in range(2, NUM_NODES + 2)
                        for pair in pick([rows[e] for e, (t, _) in enumerate(EDGES) if t == to])]  # row j: input j
    return _full_concat(cells)


def _full_concat(cells: dict[str, list[tuple[str, int]]]) -> Genotype:
    """The genotype of two cells that concatenate all their nodes, as every searched DARTS cell does."""
    nodes = range(2, NUM_NODES + 2)
    return Genotype(normal=cells["normal"], normal_concat=list(nodes), reduce=cells["reduce"], reduce_concat=list(nodes))


_REAL_OPS = [k for k, name in enumerate(OP_NAMES) if not OP_TRAITS[name].zero]  # DARTS never derives a zero op


def _darts_pairs(W: list[list[float]]) -> list[tuple[str, int]]:
    best = [max(_REAL_OPS, key=lambda k: (W[j][k], -k)) for j in range(len(W))]  # lower op wins ties
    inputs = sorted(range(len(W)), key=lambda j: -W[j][best[j]])[:2]  # stable: lower input wins ties
    return [(OP_NAMES[best[j]], j) for j in inputs]


def _gdas_pairs(W: list[list[float]]) -> list[tuple[str, int]]:
    ranked = sorted(((j, k) for j in range(len(W)) for k in _REAL_OPS), key=lambda p: -W[p[0]][p[1]])
    return [(OP_NAMES[k], j) for j, k in ranked[:2]]


# --------------------------------------------------------------------------- modules

def _preprocess(C_prev_prev: int, C_prev: int, C: int, reduction_prev: bool, affine: bool, track: bool):
    """DARTS's input preprocessing to width C; ``c_{k-2}`` is halved when the previous cell reduced."""
    pre0 = (FactorizedReduce(C_prev_prev, C, affine=affine, track_running_stats=track) if reduction_prev
            else ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=affine, track_running_stats=track, conv_bias=False))
    pre1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=affine, track_running_stats=track, conv_bias=False)
    return pre0, pre1


def _search_op(name: str, C: int, stride: int, track: bool = False) -> nn.Module:
    op = OPS[name](C, stride, False, track)
    traits = OP_TRAITS[name]
    # DARTS's MixedOp: a pool (parameter-free, neither zero nor identity) gets a BN so its scale matches the others'.
    if traits.parameter_free and not (traits.zero or traits.skip):
        op = PoolBN(op, StraightThroughBatchNorm2d(C, affine=False, track_running_stats=track))
    return op


def _aux_skip(C: int, stride: int, track: bool) -> nn.Module:
    """DARTS-'s auxiliary skip of an edge: identity, or a factorized reduction where the edge strides
    (DARTS-'s ``FactorizedReduce(C, C, affine=False)``; running stats as the supernet's layout)."""
    return nn.Identity() if stride == 1 else FactorizedReduce(C, C, affine=False, track_running_stats=track)


# The supernet's BN layouts: official = DARTS's model_search.py (every BN keeps running statistics;
# cell BNs without affine); batch_stats = every BN normalises with batch statistics, in eval mode too.
BN_LAYOUTS = ("official", "batch_stats")


def _cell_stack(C: int, N: int, in_channels: int, make_cell: Callable[..., nn.Module], track: bool = True):
    """Stem and the 3N + 2 cells shared by the supernet and the discrete network.

    ``track`` sets the stem BN's ``track_running_stats`` (False: batch statistics
    in eval mode too, the supernet's ``batch_stats`` layout).

    Returns:
        ``(stem, cells, widths)`` with ``widths[i]`` the output width of cell i.
    """
    C_stem = STEM_MULTIPLIER * C
    stem = nn.Sequential(nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False),
                         nn.BatchNorm2d(C_stem, track_running_stats=track))
    cells, widths = nn.ModuleList(), []
    C_prev_prev, C_prev, C_curr, reduction_prev = C_stem, C_stem, C, False
    for i in range(3 * N + 2):
        reduction = i in (N, 2 * N + 1)
        C_curr = 2 * C_curr if reduction else C_curr
        cell = make_cell(C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
        cells.append(cell)
        C_prev_prev, C_prev, reduction_prev = C_prev, cell.multiplier * C_curr, reduction
        widths.append(C_prev)
    return stem, cells, widths


class DartsSearchCell(nn.Module):
    """A cell with a choice layer on each of its 14 edges (BN without affine; running stats if
    ``track_running_stats``, as DARTS's model_search.py).

    ``gdas_gate`` and ``aux_skip`` (DARTS-'s path on every edge, see ``_aux_skip``): see ``ChoiceLayer``.
    """

    multiplier = NUM_NODES

    def __init__(self, C_prev_prev: int, C_prev: int, C: int, reduction: bool, reduction_prev: bool,
                 gdas_gate: str = GDAS_GATE, aux_skip: bool = False, track_running_stats: bool = False):
        super().__init__()
        self.reduction = reduction
        track = track_running_stats
        self.preprocess0, self.preprocess1 = _preprocess(C_prev_prev, C_prev, C, reduction_prev, False, track)
        strides = [2 if reduction and j < 2 else 1 for _, j in EDGES]
        self.edges = nn.ModuleList(
            ChoiceLayer({name: _search_op(name, C, stride, track) for name in OP_NAMES}, gdas_gate=gdas_gate,
                        aux_skip=_aux_skip(C, stride, track) if aux_skip else None, traits=OP_TRAITS)
            for stride in strides)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, coefficients: torch.Tensor,
                indices: list[int] | None, edge_coefficients: torch.Tensor | None = None) -> torch.Tensor:
        # s0, s1: [B, C_prev_prev | C_prev, H, W]; coefficients: [14, 8]; indices: 14 ints or None;
        # edge_coefficients: [14] (PC-DARTS edge normalisation: each node's inputs weighted, summing to 1) or None.
        states = [self.preprocess0(s0), self.preprocess1(s1)]  # 2 x [B, C, H, W]
        for to in range(2, NUM_NODES + 2):
            outs = ((e, self.edges[e](states[j], coefficients[e], None if indices is None else indices[e]))
                    for e, (t, j) in enumerate(EDGES) if t == to)
            if edge_coefficients is None:
                states.append(add_all(out for _, out in outs))  # [B, C, H', W']
            else:
                states.append(add_all(edge_coefficients[e] * out for e, out in outs))
        return torch.cat(states[2:], dim=1)  # [B, 4C, H', W']


class DartsCell(nn.Module):
    """The discrete cell of a genotype (DARTS's model.py ``Cell``; affine BN with running stats)."""

    def __init__(self, genotype: Genotype, C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                 reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        pairs = genotype.reduce if reduction else genotype.normal
        self.concat = list(genotype.reduce_concat if reduction else genotype.normal_concat)
        self.multiplier = len(self.concat)
        self.preprocess0, self.preprocess1 = _preprocess(C_prev_prev, C_prev, C, reduction_prev, True, True)
        self.inputs = [j for _, j in pairs]
        self.ops = nn.ModuleList(OPS[op](C, 2 if reduction and j < 2 else 1, True, True) for op, j in pairs)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]  # 2 x [B, C, H, W]
        for node in range(len(self.ops) // 2):
            total = 0
            for e in (2 * node, 2 * node + 1):
                h = self.ops[e](states[self.inputs[e]])  # [B, C, H', W']
                # As DARTS: drop whole samples of an op's output, except of the identity.
                if self.training and drop_prob > 0 and not isinstance(self.ops[e], nn.Identity):
                    h = drop_path(h, drop_prob, training=True)
                total = total + h
            states.append(total)
        return torch.cat([states[s] for s in self.concat], dim=1)  # [B, multiplier * C, H', W']


class AuxiliaryHeadCIFAR(nn.Module):
    """DARTS's auxiliary classifier for an 8x8 feature map (after the second reduction on CIFAR)."""

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),  # DARTS has inplace=True here; same values, no aliasing of the cell output
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),  # 8x8 -> 2x2
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),  # 2x2 -> 1x1
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C, 8, 8] -> [B, num_classes]
        return self.classifier(self.features(x).flatten(1))


class DartsSupernet(Supernet):
    """The DARTS search network (DARTS's model_search.py ``Network``): 3N + 2 search cells.

    ``edge_normalization=True`` adds PC-DARTS's edge normalisation: learned weights on
    the inputs of each node (softmax over its incoming edges), multiplied with the op
    probabilities at derivation, which steadies the choice of inputs.
    ``gdas_gate`` ("": ``GDAS_GATE``) and ``aux_skip``: see ``DartsSearchCell``.

    ``bn_layout``: ``official`` (default): every BN keeps running statistics, as
    model_search.py builds them (the stem BN affine, the cell BNs without affine);
    ``batch_stats``: every BN normalises with batch statistics, in eval mode too.
    """

    def __init__(self, mode: str = "gdas", num_classes: int = 10, C: int = 16, N: int = 2, in_channels: int = 3,
                 edge_normalization: bool = False, gdas_gate: str = "", aux_skip: bool = False,
                 bn_layout: str = "official"):
        if bn_layout not in BN_LAYOUTS:
            raise ValueError(f"unknown bn_layout {bn_layout!r}; choose from {', '.join(BN_LAYOUTS)}")
        edge_nodes = {g: [to for to, _ in EDGES] for g in GROUPS} if edge_normalization else None
        super().__init__(Architecture({g: (len(EDGES), len(OP_NAMES)) for g in GROUPS}, list(OP_NAMES),
                                      edge_nodes=edge_nodes), mode)
        self.bn_layout = bn_layout
        track = bn_layout == "official"
        self.stem, self.cells, widths = _cell_stack(
            C, N, in_channels,
            lambda *args: DartsSearchCell(*args, gdas_gate or GDAS_GATE, aux_skip, track_running_stats=track),
            track=track)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(widths[-1], num_classes)

    def forward_sample(self, x: torch.Tensor, sample: ArchSample) -> torch.Tensor:
        # x: [B, in_channels, H, W] -> logits [B, num_classes]
        s0 = s1 = self.stem(x)  # [B, 3C, H, W]
        for cell in self.cells:
            group = "reduce" if cell.reduction else "normal"
            indices = None if sample.indices is None else sample.indices[group]
            edges = None if sample.edge_coefficients is None else sample.edge_coefficients[group]
            s0, s1 = s1, cell(s0, s1, sample.coefficients[group], indices, edges)
        return self.classifier(self.global_pooling(s1).flatten(1))

    def choice_layers(self) -> list[tuple[str, int, ChoiceLayer]]:
        return [("reduce" if cell.reduction else "normal", e, edge) for cell in self.cells
                for e, edge in enumerate(cell.edges)]


class NetworkCIFAR(TimmClassifier, nn.Module):
    """The discrete network of a genotype, as DARTS's model.py ``NetworkCIFAR`` trains it.

    Args:
        genotype: The cells.
        num_classes, C, N, in_channels: Classes, initial width, normal cells per stage, image channels.
        auxiliary: Adds the auxiliary head after cell ``2 * (3N + 2) // 3``; in training
            mode ``forward`` then returns ``(logits, aux_logits)``.
        drop_path_prob: Drop-path probability in training; an attribute, so a
            training loop can ramp it per epoch.
        global_pool: timm's pooling type before the classifier (``avg`` as DARTS).

    timm's classifier interface (``forward_features``, ``forward_head``,
    ``reset_classifier``, ...): see ``nas.layers.timm_head``.
    """

    def __init__(self, genotype: Genotype, num_classes: int = 10, C: int = 36, N: int = 6, in_channels: int = 3,
                 auxiliary: bool = False, drop_path_prob: float = 0.0, global_pool: str = "avg"):
        super().__init__()
        self.genotype = genotype
        self.drop_path_prob = drop_path_prob
        self.stem, self.cells, widths = _cell_stack(
            C, N, in_channels, lambda *args: DartsCell(genotype, *args))
        self.aux_index = 2 * len(self.cells) // 3
        self.auxiliary_head = AuxiliaryHeadCIFAR(widths[self.aux_index], num_classes) if auxiliary else None
        self.num_classes, self.num_features = num_classes, widths[-1]
        self.global_pool = timm_global_pool(global_pool)
        self.classifier = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def _cells(self, x: torch.Tensor, auxiliary: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        # x: [B, in_channels, H, W] -> last cell output [B, num_features, H / 4, W / 4], aux logits or None
        aux_logits = None
        s0 = s1 = self.stem(x)  # [B, 3C, H, W]
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if auxiliary and i == self.aux_index:
                aux_logits = self.auxiliary_head(s1)
        return s1, aux_logits

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, in_channels, H, W] -> [B, num_features, H / 4, W / 4]
        return self._cells(x, auxiliary=False)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        # x: [B, in_channels, H, W] -> logits [B, num_classes] (and aux logits [B, num_classes])
        s1, aux_logits = self._cells(x, auxiliary=self.auxiliary_head is not None and self.training)
        logits = self.forward_head(s1)
        return logits if aux_logits is None else (logits, aux_logits)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """As ``TimmClassifier``; the auxiliary head (if any) gets a new classifier too, or goes with 0 classes."""
        super().reset_classifier(num_classes, global_pool)
        if self.auxiliary_head is not None and num_classes <= 0:
            self.auxiliary_head = None
        elif self.auxiliary_head is not None:
            aux = self.auxiliary_head.classifier
            self.auxiliary_head.classifier = nn.Linear(aux.in_features, num_classes, device=aux.weight.device)


# --------------------------------------------------------------------------- the space

def _node_name(state: int) -> str:
    return {0: "c_{k-2}", 1: "c_{k-1}"}.get(state, str(state - 2))


class DartsSpace(SearchSpace):
    """The DARTS space: normal and reduction cells, 14 edges x 8 ops each."""

    name = "darts"
    op_names = OP_NAMES
    derivation_rules = DERIVATION_RULES
    published = PUBLISHED
    gdas_gate = GDAS_GATE  # the default GDAS gradient rule (model.gdas_gate="")

    supernet_arguments = frozenset({"C", "N", "edge_normalization", "gdas_gate", "aux_skip", "bn_layout"})
    network_arguments = frozenset({"C", "N", "auxiliary", "drop_path_prob"})

    def op_traits(self) -> dict[str, OpTraits]:
        return dict(OP_TRAITS)

    def build_supernet(self, mode: str = "gdas", num_classes: int = 10, C: int = 16, N: int = 2,
                       in_channels: int = 3, edge_normalization: bool = False, gdas_gate: str = "",
                       aux_skip: bool = False, bn_layout: str = "official") -> DartsSupernet:
        return DartsSupernet(mode=mode, num_classes=num_classes, C=C, N=N, in_channels=in_channels,
                             edge_normalization=edge_normalization, gdas_gate=gdas_gate, aux_skip=aux_skip,
                             bn_layout=bn_layout)

    def build_network(self, genotype, num_classes: int = 10, C: int = 36, N: int = 6, in_channels: int = 3,
                      auxiliary: bool = False, drop_path_prob: float = 0.0) -> NetworkCIFAR:
        if not isinstance(genotype, Genotype):
            genotype = self.parse(genotype)  # a UserError for anything but a valid Genotype(...) string
        return NetworkCIFAR(genotype, num_classes=num_classes, C=C, N=N, in_channels=in_channels,
                            auxiliary=auxiliary, drop_path_prob=drop_path_prob)

    def derive_genotype(self, probabilities: dict[str, torch.Tensor], rule: str | None = None) -> Genotype:
        return derive_genotype(probabilities, rule or "darts")

    def parse(self, text: str) -> Genotype:
        return parse_genotype(text)

    def format(self, genotype: Genotype) -> str:
        return format_genotype(genotype)

    def edge_names(self) -> dict[str, list[str]]:
        return {group: [f"{to}<-{j}" for to, j in EDGES] for group in GROUPS}

    def cell_graphs(self, genotype: Genotype) -> dict[str, list[tuple[str, str, str]]]:
        # DARTS's plot naming: inputs c_{k-2}, c_{k-1}; nodes 0..3; output c_{k}.
        graphs = {}
        for kind in GROUPS:
            edges = [(_node_name(j), str(e // 2), op) for e, (op, j) in enumerate(getattr(genotype, kind))
                     if not OP_TRAITS[op].zero]
            edges += [(_node_name(s), "c_{k}", "concat") for s in getattr(genotype, kind + "_concat")]
            graphs[kind] = edges
        return graphs

    def genotype_edges(self, genotype: Genotype) -> list[tuple[str, int, str]]:
        # Pair k of a cell feeds node k // 2 (state k // 2 + 2) from input state j.
        return [(kind, EDGES.index((e // 2 + 2, j)), op) for kind in GROUPS
                for e, (op, j) in enumerate(getattr(genotype, kind))]

    def random_genotype(self, generator: torch.Generator | None = None) -> Genotype:
        cells = {}
        for kind in GROUPS:
            cells[kind] = []
            for to in range(2, NUM_NODES + 2):
                inputs = sorted(torch.randperm(to, generator=generator)[:2].tolist())  # uniform distinct pair
                ops = torch.randint(len(_REAL_OPS), (2,), generator=generator).tolist()
                cells[kind] += [(OP_NAMES[_REAL_OPS[k]], j) for k, j in zip(ops, inputs)]
        return _full_concat(cells)


DARTS_SPACE = register_space(DartsSpace())


def __getattr__(attr: str):
    # 0.1 path of the timm entry point, which moved to search_spaces.timm_models (kept for one release).
    if attr == "darts_network":
        from .timm_models import darts_network
        return darts_network
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
