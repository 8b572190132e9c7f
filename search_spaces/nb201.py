"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020), as the benchmark's official code defines it.

A cell is a DAG of 4 nodes; each of its 6 edges (j -> i for j < i) carries one
of 5 ops, and the cell outputs node 3. The macro network is
stem -> N cells (C) -> residual reduction -> N cells (2C) -> residual
reduction -> N cells (4C) -> BN -> ReLU -> global pool -> linear.
One logit table ``cell`` [6, 5] is shared by every cell.

The discrete network is the benchmark's ``TinyNetwork`` (every BN affine, with
running statistics). The supernet is GDAS's ``TinyNetworkGDAS`` as NAS-Bench-201's
search scripts build it (``track_running_stats=0``): search-cell BNs without
affine or running statistics; stem, residual reductions and head with default BNs
(``bn_layout="official"``). ``bn_layout="batch_stats"`` instead normalises every BN
of the supernet with batch statistics, in eval mode too. Where this code differs
from the official one: the samples are drawn by ``nas.sampling.gumbel`` (the official code
resamples until the noise is finite) and ``none`` costs nothing when sampled.

Arch string, edges in logit row order (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2):
``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|``
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from nas.sampling.architecture import Architecture, ArchSample
from nas.layers.choice import ChoiceLayer
from nas.utils.errors import UserError
from nas.layers.ops import add_all, Pooling, ReLUConvBN, ResNetBasicBlock, Zero
from nas.layers.op_traits import LEARNED, PARAMETER_FREE, SKIP, ZERO, OpTraits
from nas.spaces.space import SearchSpace, register_space
from nas.layers.gates import ALL_OPS
from nas.layers.supernet import Supernet
from nas.layers.timm_head import TimmClassifier, global_pool as timm_global_pool
from nas.utils.yamlio import brief

OP_NAMES = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

# op name -> builder(C_in, C_out, stride, affine, track_running_stats). Cells use stride 1, C_in == C_out.
OPS: dict[str, Callable[..., nn.Module]] = {
    "none": lambda C_in, C_out, stride, affine, track: Zero(C_in, C_out, stride),
    "skip_connect": lambda C_in, C_out, stride, affine, track: nn.Identity(),
    "nor_conv_1x1": lambda C_in, C_out, stride, affine, track: ReLUConvBN(
        C_in, C_out, 1, stride, 0, affine=affine, track_running_stats=track),
    "nor_conv_3x3": lambda C_in, C_out, stride, affine, track: ReLUConvBN(
        C_in, C_out, 3, stride, 1, affine=affine, track_running_stats=track),
    "avg_pool_3x3": lambda C_in, C_out, stride, affine, track: Pooling(
        C_in, C_out, stride, "avg", affine=affine, track_running_stats=track),
}
# What each op is (derivation caps and exclusions, costs, soft mixtures read these, not the names).
OP_TRAITS: dict[str, OpTraits] = {
    "none": ZERO,
    "skip_connect": SKIP,
    "nor_conv_1x1": LEARNED,
    "nor_conv_3x3": LEARNED,
    "avg_pool_3x3": PARAMETER_FREE,  # cells keep the width, so no 1x1 conv precedes the pool
}

NUM_NODES = 4
EDGES = [(i, j) for i in range(1, NUM_NODES) for j in range(i)]  # (to, from), logit row order
# GDAS arch step: the unsampled ops' weights get g.sum() each, as GDAS's NAS-Bench-201 search cell
# (``SearchCell.forward_gdas``) adds them to the edge as scalars.
GDAS_GATE = ALL_OPS
MAX_ARCH_CHARS = 1024  # a valid arch string is under 150 characters
_EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


@dataclass(frozen=True)
class NB201Genotype:
    """An NB201 cell: ``nodes[i - 1]`` lists the ``(op, input_node)`` pairs feeding node i."""

    nodes: tuple[tuple[tuple[str, int], ...], ...]

    def format(self) -> str:
        """The benchmark's arch string."""
        return "|" + "|+|".join("|".join(f"{op}~{j}" for op, j in node) for node in self.nodes) + "|"

    @classmethod
    def parse(cls, text: str) -> "NB201Genotype":
        """Parses an arch string; ``UserError`` says what is wrong and shows the expected form."""
        if not isinstance(text, str):
            raise UserError(f"an NB201 genotype must be an arch string like {_EXAMPLE!r}, "
                            f"got {type(text).__name__} {brief(text)}")
        text = text.strip()
        def bad(why: str) -> UserError:
            return UserError(f"malformed NB201 arch string {brief(text)}: {why}; expected e.g. {_EXAMPLE!r}")
        if len(text) > MAX_ARCH_CHARS:
            raise bad(f"it is {len(text):,} characters long; an arch string is at most {MAX_ARCH_CHARS}")
        if not re.fullmatch(r"\|.*\|", text):
            raise bad("it must start and end with '|'")
        node_texts = text[1:-1].split("|+|")
        if len(node_texts) != NUM_NODES - 1:
            raise bad(f"found {len(node_texts)} nodes separated by '+', expected {NUM_NODES - 1}")
        nodes = []
        for i, node_text in enumerate(node_texts, start=1):
            pairs = []
            for item in node_text.split("|"):
                m = re.fullmatch(r"([a-z0-9_]+)~([0-9]{1,3})", item, flags=re.ASCII)
                if not m:
                    raise bad(f"edge {item!r} of node {i} is not 'op~input'")
                op, j = m.group(1), int(m.group(2))
                if op not in OP_NAMES:
                    raise bad(f"unknown op {op!r} (NB201 ops: {', '.join(OP_NAMES)})")
                pairs.append((op, j))
            if sorted(j for _, j in pairs) != list(range(i)):
                raise bad(f"node {i} must take inputs 0..{i - 1} once each, got {[j for _, j in pairs]}")
            nodes.append(tuple(sorted(pairs, key=lambda p: p[1])))
        return cls(tuple(nodes))

    def edge_ops(self) -> list[str]:
        """The op of each edge in logit row order."""
        ops = {(i, j): op for i, node in enumerate(self.nodes, start=1) for op, j in node}
        return [ops[e] for e in EDGES]


# The supernet's BN layouts outside the search cells (whose BNs never have affine or running stats).
BN_LAYOUTS = ("official", "batch_stats")


def _macro(C: int, N: int, in_channels: int, make_cell: Callable[[int], nn.Module], track: bool = True):
    """Stem, cell stack and head shared by the supernet and the discrete network.

    ``track`` sets ``track_running_stats`` of the stem, reduction and head BNs
    (affine in both cases): True as the benchmark and the official GDAS supernet
    build them; False makes them normalise with batch statistics in eval mode too.
    """
    stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False),
                         nn.BatchNorm2d(C, track_running_stats=track))
    channels = [C] * N + [2 * C] + [2 * C] * N + [4 * C] + [4 * C] * N
    reductions = [False] * N + [True] + [False] * N + [True] + [False] * N
    cells, C_prev = nn.ModuleList(), C
    for C_curr, reduction in zip(channels, reductions):
        cells.append(ResNetBasicBlock(C_prev, C_curr, 2, track_running_stats=track) if reduction else make_cell(C_curr))
        C_prev = C_curr
    head = nn.Sequential(nn.BatchNorm2d(C_prev, track_running_stats=track), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return stem, cells, head, C_prev


class NB201SearchCell(nn.Module):
    """A cell with a choice layer on every edge (BN without affine or running stats).

    ``aux_skip`` gives every edge DARTS-'s auxiliary identity path (all edges keep shape).
    """

    def __init__(self, C: int, op_names=OP_NAMES, gdas_gate: str = GDAS_GATE, aux_skip: bool = False):
        super().__init__()
        self.edges = nn.ModuleList(
            ChoiceLayer({name: OPS[name](C, C, 1, False, False) for name in op_names}, gdas_gate=gdas_gate,
                        aux_skip=nn.Identity() if aux_skip else None,
                        traits={name: OP_TRAITS[name] for name in op_names}) for _ in EDGES)

    def forward(self, x: torch.Tensor, coefficients: torch.Tensor, indices: list[int] | None) -> torch.Tensor:
        # x: [B, C, H, W]; coefficients: [6, num_ops]; indices: 6 ints or None.
        nodes = [x]
        for i in range(1, NUM_NODES):
            nodes.append(add_all(self.edges[e](nodes[j], coefficients[e], None if indices is None else indices[e])
                             for e, (to, j) in enumerate(EDGES) if to == i))
        return nodes[-1]


class NB201Cell(nn.Module):
    """The discrete cell of a genotype (BN with affine and running stats)."""

    def __init__(self, C: int, genotype: NB201Genotype):
        super().__init__()
        self.edges = nn.ModuleList(OPS[op](C, C, 1, True, True) for op in genotype.edge_ops())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for i in range(1, NUM_NODES):
            nodes.append(add_all(self.edges[e](nodes[j]) for e, (to, j) in enumerate(EDGES) if to == i))
        return nodes[-1]


class NB201Supernet(Supernet):
    """The NB201 search supernet (GDAS's ``TinyNetworkGDAS``).

    Args:
        mode, num_classes, C, N, in_channels, op_names: Sampling mode, classes, width, cells
            per stage, image channels, candidate ops.
        gdas_gate: The GDAS gradient rule ("": ``GDAS_GATE``); see ``ChoiceLayer``.
        aux_skip: Adds DARTS-'s skip path to every edge; see ``ChoiceLayer``.
        bn_layout: ``official`` (default): stem, residual reductions and head BNs keep running
            statistics, as ``TinyNetworkGDAS``; ``batch_stats``: they normalise with batch
            statistics, in eval mode too.
    """

    def __init__(self, mode: str = "gdas", num_classes: int = 10, C: int = 16, N: int = 5,
                 in_channels: int = 3, op_names=OP_NAMES, gdas_gate: str = "", aux_skip: bool = False,
                 bn_layout: str = "official"):
        if bn_layout not in BN_LAYOUTS:
            raise ValueError(f"unknown bn_layout {bn_layout!r}; choose from {', '.join(BN_LAYOUTS)}")
        super().__init__(Architecture({"cell": (len(EDGES), len(op_names))}, list(op_names)), mode)
        self.bn_layout = bn_layout
        self.stem, self.cells, self.head, C_out = _macro(
            C, N, in_channels, lambda c: NB201SearchCell(c, op_names, gdas_gate or GDAS_GATE, aux_skip),
            track=bn_layout == "official")
        self.classifier = nn.Linear(C_out, num_classes)

    def forward_sample(self, x: torch.Tensor, sample: ArchSample) -> torch.Tensor:
        # x: [B, in_channels, H, W] -> logits [B, num_classes]
        coefficients = sample.coefficients["cell"]  # [6, num_ops]
        indices = None if sample.indices is None else sample.indices["cell"]
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x, coefficients, indices) if isinstance(cell, NB201SearchCell) else cell(x)
        return self.classifier(self.head(x))

    def choice_layers(self) -> list[tuple[str, int, ChoiceLayer]]:
        return [("cell", e, edge) for cell in self.cells if isinstance(cell, NB201SearchCell)
                for e, edge in enumerate(cell.edges)]


class NB201Network(TimmClassifier, nn.Module):
    """The discrete NB201 network of a genotype, as the benchmark trains it.

    timm's classifier interface (``forward_features``, ``forward_head``,
    ``reset_classifier``, ...): see ``nas.layers.timm_head``.
    """

    def __init__(self, genotype: NB201Genotype, num_classes: int = 10, C: int = 16, N: int = 5,
                 in_channels: int = 3, global_pool: str = "avg"):
        super().__init__()
        self.genotype = genotype
        self.stem, self.cells, head, C_out = _macro(C, N, in_channels, lambda c: NB201Cell(c, genotype))
        self.head = head[:2]  # BN, ReLU (the state_dict keys head.0.* stay those of the full head)
        self.num_classes, self.num_features = num_classes, C_out
        self.global_pool = timm_global_pool(global_pool)
        self.classifier = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, in_channels, H, W] -> [B, 4C, H / 4, W / 4]
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, in_channels, H, W] -> logits [B, num_classes]
        return self.forward_head(self.forward_features(x))


class NB201Space(SearchSpace):
    """NAS-Bench-201: 6 edges x 5 ops, 15,625 cells."""

    name = "nb201"
    op_names = OP_NAMES
    gdas_gate = GDAS_GATE  # the default GDAS gradient rule (model.gdas_gate="")

    supernet_arguments = frozenset({"C", "N", "gdas_gate", "aux_skip", "bn_layout"})
    network_arguments = frozenset({"C", "N", "auxiliary", "drop_path_prob"})

    def op_traits(self) -> dict[str, OpTraits]:
        return dict(OP_TRAITS)

    def build_supernet(self, mode: str = "gdas", num_classes: int = 10, C: int = 16, N: int = 5,
                       in_channels: int = 3, gdas_gate: str = "", aux_skip: bool = False,
                       bn_layout: str = "official") -> NB201Supernet:
        return NB201Supernet(mode=mode, num_classes=num_classes, C=C, N=N, in_channels=in_channels,
                             gdas_gate=gdas_gate, aux_skip=aux_skip, bn_layout=bn_layout)

    def build_network(self, genotype, num_classes: int = 10, C: int = 16, N: int = 5, in_channels: int = 3,
                      auxiliary: bool = False, drop_path_prob: float = 0.0) -> NB201Network:
        if auxiliary or drop_path_prob:
            raise UserError("NAS-Bench-201 networks have no auxiliary head or drop path; "
                            "set train.auxiliary_weight=0 and train.drop_path_prob=0")
        if not isinstance(genotype, NB201Genotype):
            genotype = self.parse(genotype)  # a UserError for anything but a valid arch string
        return NB201Network(genotype, num_classes=num_classes, C=C, N=N, in_channels=in_channels)

    def derive_genotype(self, probabilities: dict[str, torch.Tensor], rule: str | None = None) -> NB201Genotype:
        # GDAS / NB201 rule: the argmax op of every edge, `none` included.
        if rule not in (None, "argmax"):
            raise UserError(f"unknown derivation rule {rule!r} for nb201; it has one: argmax")
        best = probabilities["cell"].argmax(dim=-1).tolist()
        return self._from_edge_ops([self.op_names[k] for k in best])

    def parse(self, text: str) -> NB201Genotype:
        return NB201Genotype.parse(text)

    def format(self, genotype: NB201Genotype) -> str:
        return genotype.format()

    def edge_names(self) -> dict[str, list[str]]:
        return {"cell": [f"{i}<-{j}" for i, j in EDGES]}

    def cell_graphs(self, genotype: NB201Genotype) -> dict[str, list[tuple[str, str, str]]]:
        return {"cell": [(str(j), str(i), op) for (i, j), op in zip(EDGES, genotype.edge_ops())
                         if not OP_TRAITS[op].zero]}

    def genotype_edges(self, genotype: NB201Genotype) -> list[tuple[str, int, str]]:
        return [("cell", e, op) for e, op in enumerate(genotype.edge_ops())]

    def random_genotype(self, generator: torch.Generator | None = None) -> NB201Genotype:
        picks = torch.randint(len(self.op_names), (len(EDGES),), generator=generator).tolist()
        return self._from_edge_ops([self.op_names[k] for k in picks])

    @staticmethod
    def _from_edge_ops(ops: list[str]) -> NB201Genotype:
        nodes = [tuple((op, j) for (to, j), op in zip(EDGES, ops) if to == i) for i in range(1, NUM_NODES)]
        return NB201Genotype(tuple(nodes))


NB201_SPACE = register_space(NB201Space())


def __getattr__(attr: str):
    # 0.1 path of the timm entry point, which moved to search_spaces.timm_models (kept for one release).
    if attr == "nb201_network":
        from .timm_models import nb201_network
        return nb201_network
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
