"""An FBNet-style layer-wise space (Wu et al., CVPR 2019) on the MobileNetV2 layout, built from timm blocks.

The network is stem (3x3 conv, BN, ReLU6) -> 17 searchable layers in the 7
MobileNetV2 stages (channels 16, 24, 32, 64, 96, 160, 320; repeats 1, 2, 3, 4,
3, 3, 1; the first layer of a stage strides) -> head (1x1 conv to 1280, BN,
ReLU6, global pool, linear). Each layer chooses a timm ``InvertedResidual``
with kernel 3/5/7 and expansion 3/6, or ``skip``. One logit table ``layers``
[L, 7], columns ``OP_NAMES``. The first layer of a stage changes the shape, so
it has no ``skip``: its column holds a ``Zero`` placeholder (named ``none`` in
the choice layer, so the soft modes never run it) and its logit is masked (see
``Architecture``'s ``allowed`` mask); ``derive_genotype`` never picks it either.

Parameters: ``C`` is the stem width (32 = MobileNetV2 1.0x); every width is
scaled by ``C / 32`` and rounded to a multiple of 8, as timm's width
multiplier. ``N`` caps the layers per stage: ``min(repeats, N)``, so N >= 4 is
the full space (17 layers), N = 1 has 7. ``input_size`` <= 64 uses the CIFAR
layout (stem and the first c24 layer at stride 1: total stride 8), larger
inputs MobileNetV2's ImageNet strides (total 32).

Logit rows are ordered block-major, ``s0.b0, s1.b0, ..., s6.b0, s1.b1, ...``,
so the rows of a smaller N are a prefix of the full space's and
``edge_names()`` names them whatever N was. The genotype's native string is a
timm EfficientNet ``arch_def`` with MobileNetV2's (ImageNet) strides and base
channels, skip layers dropped, e.g.
``[['ir_r1_k3_s1_e6_c16'], ['ir_r1_k5_s2_e3_c24', 'ir_r1_k3_s1_e6_c24'], ...]``.
"""
from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass

import torch
import torch.nn as nn
from timm.layers import BatchNormAct2d, create_conv2d
from timm.models._efficientnet_blocks import InvertedResidual
from timm.models._efficientnet_builder import decode_arch_def, round_channels
from timm.models.efficientnet import EfficientNet

from nas.sampling.architecture import Architecture, ArchSample
from nas.layers.choice import ChoiceLayer
from nas.utils.errors import UserError
from nas.layers.ops import Zero
from nas.layers.op_traits import LEARNED, ZERO, OpTraits, SKIP as SKIP_TRAITS
from nas.spaces.space import SearchSpace, register_space
from nas.layers.gates import SAMPLED_OP
from nas.layers.supernet import Supernet

IR_OPS = {f"ir_k{k}_e{e}": (k, e) for k in (3, 5, 7) for e in (3, 6)}  # op name -> (kernel, expansion)
OP_NAMES = (*IR_OPS, "skip")
SKIP = OP_NAMES.index("skip")
# What each op is (derivation caps, costs, soft mixtures read these, not the names).
OP_TRAITS: dict[str, OpTraits] = {**{name: LEARNED for name in IR_OPS}, "skip": SKIP_TRAITS}
STAGES = ((16, 1, 1), (24, 2, 2), (32, 2, 3), (64, 2, 4), (96, 1, 3), (160, 2, 3), (320, 1, 1))  # (c, s, repeats)
STEM_WIDTH, HEAD_WIDTH, SMALL_INPUT_MAX = 32, 1280, 64
ACT = nn.ReLU6
SEARCH_NORM = functools.partial(nn.BatchNorm2d, affine=False, track_running_stats=False)
# GDAS arch step: only the sampled op's weight gets a gradient (the plain straight-through estimator of
# h[i] * op_i(x)). GDAS's code has no layer-wise space; its NB201 rule's extra g.sum() on every unsampled
# weight is the same for all of them, so through the softmax it only shifts the sampled op's signal by g.sum().
GDAS_GATE = SAMPLED_OP


def layer_rows(N: int = 4) -> list[tuple[int, int]]:
    """``(stage, block)`` of each logit row, block-major: the rows of a smaller N are a prefix."""
    layers = [(s, b) for s, (_, _, repeats) in enumerate(STAGES) for b in range(min(repeats, N))]
    return sorted(layers, key=lambda sb: (sb[1], sb[0]))


def stage_strides(input_size: int) -> tuple[int, list[int]]:
    """``(stem stride, first-layer stride of each stage)``: CIFAR layout up to ``SMALL_INPUT_MAX`` pixels."""
    strides = [s for _, s, _ in STAGES]
    if input_size <= SMALL_INPUT_MAX:
        return 1, [1, 1] + strides[2:]  # the stem and stage c24 keep the resolution (CIFAR MobileNetV2)
    return 2, strides


@dataclass(frozen=True)
class Widths:
    """Channel widths for a stem width ``C`` (multiplier ``C / 32``), rounded as timm rounds them."""

    multiplier: float
    stem: int
    stages: tuple[int, ...]
    head: int

    @classmethod
    def of(cls, C: int, head_width: int = HEAD_WIDTH) -> "Widths":
        m = C / STEM_WIDTH
        return cls(m, round_channels(STEM_WIDTH, m), tuple(round_channels(c, m) for c, _, _ in STAGES),
                   max(head_width, round_channels(head_width, m)))  # MobileNetV2 never narrows the head


# --------------------------------------------------------------------------- genotype

@dataclass(frozen=True)
class MobileNetGenotype:
    """The op of every searched layer: ``stages[s][b]`` in ``OP_NAMES`` (``skip`` only for b >= 1)."""

    stages: tuple[tuple[str, ...], ...]

    def arch_def(self, input_size: int | None = None) -> list[list[str]]:
        """timm's arch_def, skip layers dropped; ``input_size`` applies its strides (None: MobileNetV2's)."""
        strides = [s for _, s, _ in STAGES] if input_size is None else stage_strides(input_size)[1]
        out = []
        for (c, _, _), stride, ops in zip(STAGES, strides, self.stages):
            blocks = [IR_OPS[op] for op in ops if not OP_TRAITS[op].skip]
            out.append([f"ir_r1_k{k}_s{stride if i == 0 else 1}_e{e}_c{c}" for i, (k, e) in enumerate(blocks)])
        return out

    def format(self) -> str:
        return str(self.arch_def())

    def layers(self) -> list[tuple[str, str]]:
        """``(layer name, op)`` in network order."""
        return [(f"s{s}.b{b}", op) for s, ops in enumerate(self.stages) for b, op in enumerate(ops)]

    @classmethod
    def parse(cls, text: str) -> "MobileNetGenotype":
        """Parses an arch_def string (MobileNetV2 strides, base channels); ``UserError`` if malformed."""
        text = str(text).strip()
        shown = text if len(text) <= 80 else text[:77] + "..."

        def bad(why: str) -> UserError:
            return UserError(f"malformed mobilenet arch_def {shown!r}: {why}; expected e.g. {_EXAMPLE}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise bad("not a Python list of lists of block strings") from None
        if not (isinstance(value, list) and all(isinstance(st, list) for st in value)):
            raise bad("not a list of stages, each a list of block strings")
        if len(value) != len(STAGES):
            raise bad(f"it has {len(value)} stages, the space has {len(STAGES)}")
        stages = []
        for s, (block_strings, (c, stride, repeats)) in enumerate(zip(value, STAGES)):
            ops = []
            for text_block in block_strings:
                m = re.fullmatch(r"ir_r(\d+)_k(\d+)_s(\d+)_e(\d+)_c(\d+)", str(text_block))
                if not m:
                    raise bad(f"block {text_block!r} of stage {s} is not 'ir_r<R>_k<K>_s<S>_e<E>_c<C>'")
                r, k, s_block, e, c_block = map(int, m.groups())
                if f"ir_k{k}_e{e}" not in IR_OPS:
                    raise bad(f"block {text_block!r}: kernel must be 3, 5 or 7 and expansion 3 or 6")
                if c_block != c:
                    raise bad(f"block {text_block!r}: stage {s} has {c} channels")
                if s_block != (stride if not ops else 1):
                    raise bad(f"block {text_block!r}: stride must be {stride if not ops else 1} "
                              f"(the first block of stage {s} strides {stride}, the others 1)")
                ops += [f"ir_k{k}_e{e}"] * r
            if not 1 <= len(ops) <= repeats:
                raise bad(f"stage {s} has {len(ops)} blocks, must have 1 to {repeats}")
            stages.append(tuple(ops))
        return cls(tuple(stages))


_EXAMPLE = MobileNetGenotype(tuple(("ir_k3_e6",) * r for _, _, r in STAGES)).format()


# --------------------------------------------------------------------------- modules

def _aux_skip(c_in: int, c_out: int, stride: int) -> nn.Module | None:
    """DARTS-'s auxiliary skip of a layer: identity where the layer keeps its shape, none where it
    changes width or resolution (the first layer of a stage; no parameter-free path exists there)."""
    return nn.Identity() if c_in == c_out and stride == 1 else None


def _search_ops(c_in: int, c_out: int, stride: int, skip_allowed: bool
                ) -> tuple[dict[str, nn.Module], dict[str, OpTraits]]:
    """The candidate ops of a layer and their traits (where skip is not allowed, its column holds a zero op)."""
    ops: dict[str, nn.Module] = {
        name: InvertedResidual(c_in, c_out, dw_kernel_size=k, stride=stride, exp_ratio=float(e), act_layer=ACT,
                               norm_layer=SEARCH_NORM)
        for name, (k, e) in IR_OPS.items()}
    traits = {name: OP_TRAITS[name] for name in IR_OPS}
    if skip_allowed:
        ops["skip"], traits["skip"] = nn.Identity(), OP_TRAITS["skip"]
    else:  # the masked column: a zero placeholder the soft modes never run
        ops["none"], traits["none"] = Zero(c_in, c_out, stride), ZERO
    return ops, traits


class MobileNetSupernet(Supernet):
    """The layer-wise supernet: a chain of choice layers between a fixed stem and head.

    Args:
        mode, num_classes, in_channels: As every supernet.
        C: Stem width; widths scale by ``C / 32``.
        N: Layers per stage at most (4: the full MobileNetV2 depth).
        input_size: Image side (decides the strides, see ``stage_strides``).
        head_width: Width of the 1x1 head conv (at multiplier 1).
        gdas_gate: GDAS gradient rule ("": ``GDAS_GATE``; see ``ChoiceLayer``).
        aux_skip: DARTS-'s auxiliary skip on every layer that keeps its shape (see ``_aux_skip``).
    """

    def __init__(self, mode: str = "gdas", num_classes: int = 10, C: int = STEM_WIDTH, N: int = 4,
                 in_channels: int = 3, input_size: int = 32, head_width: int = HEAD_WIDTH, gdas_gate: str = "",
                 aux_skip: bool = False):
        rows = layer_rows(N)
        allowed = torch.ones(len(rows), len(OP_NAMES), dtype=torch.bool)
        allowed[:, SKIP] = torch.tensor([b > 0 for _, b in rows])
        super().__init__(Architecture({"layers": tuple(allowed.shape)}, list(OP_NAMES), allowed={"layers": allowed}),
                         mode)
        widths = Widths.of(C, head_width)
        stem_stride, strides = stage_strides(input_size)
        self.stem = nn.Sequential(create_conv2d(in_channels, widths.stem, 3, stride=stem_stride),
                                  BatchNormAct2d(widths.stem, act_layer=ACT, track_running_stats=False))
        self.rows = sorted(range(len(rows)), key=lambda r: rows[r])  # logit row of each layer, network order
        layers, c_in = [], widths.stem
        for r in self.rows:
            s, b = rows[r]
            stride = strides[s] if b == 0 else 1
            ops, traits = _search_ops(c_in, widths.stages[s], stride, b > 0)
            layers.append(ChoiceLayer(ops, traits=traits, gdas_gate=gdas_gate or GDAS_GATE,
                                      aux_skip=_aux_skip(c_in, widths.stages[s], stride) if aux_skip else None))
            c_in = widths.stages[s]
        self.layers = nn.ModuleList(layers)
        self.head = nn.Sequential(create_conv2d(c_in, widths.head, 1),
                                  BatchNormAct2d(widths.head, act_layer=ACT, track_running_stats=False),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(widths.head, num_classes)

    def forward_sample(self, x: torch.Tensor, sample: ArchSample) -> torch.Tensor:
        # x: [B, in_channels, H, W] -> logits [B, num_classes]
        coefficients = sample.coefficients["layers"]  # [L, 7]
        indices = None if sample.indices is None else sample.indices["layers"]
        x = self.stem(x)  # [B, stem, H / stem_stride, W / stem_stride]
        for layer, row in zip(self.layers, self.rows):
            x = layer(x, coefficients[row], None if indices is None else indices[row])  # [B, c_stage, H', W']
        return self.classifier(self.head(x))  # head: [B, head_width]

    def choice_layers(self) -> list[tuple[str, int, ChoiceLayer]]:
        return [("layers", row, layer) for row, layer in zip(self.rows, self.layers)]


class SearchedEfficientNet(EfficientNet):
    """timm's ``EfficientNet`` of a genotype (affine BN with running stats), via ``decode_arch_def``.

    A subclass only so that timm's ``build_model_with_cfg`` can construct it from
    keyword arguments (and wrap it for ``features_only``); the modules and the
    state_dict keys are EfficientNet's.
    """

    def __init__(self, genotype: MobileNetGenotype, num_classes: int = 10, C: int = STEM_WIDTH, in_chans: int = 3,
                 input_size: int = 32, head_width: int = HEAD_WIDTH, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, global_pool: str = "avg"):
        widths = Widths.of(C, head_width)
        stem_stride, _ = stage_strides(input_size)
        super().__init__(decode_arch_def(genotype.arch_def(input_size)), num_classes=num_classes,
                         num_features=widths.head, in_chans=in_chans, stem_size=STEM_WIDTH,
                         round_chs_fn=functools.partial(round_channels, multiplier=widths.multiplier),
                         act_layer=ACT, drop_rate=drop_rate, drop_path_rate=drop_path_rate, global_pool=global_pool)
        if stem_stride == 1:  # EfficientNet's stem always strides 2; a 3x3 conv pads 1 at either stride
            self.conv_stem.stride = (1, 1)
            for info in self.feature_info:
                info["reduction"] //= 2
        self.genotype = genotype


def build_efficientnet(genotype: MobileNetGenotype, num_classes: int = 10, C: int = STEM_WIDTH,
                       in_chans: int = 3, input_size: int = 32, head_width: int = HEAD_WIDTH,
                       drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> EfficientNet:
    """timm's ``EfficientNet`` of a genotype (a ``SearchedEfficientNet``)."""
    return SearchedEfficientNet(genotype, num_classes=num_classes, C=C, in_chans=in_chans, input_size=input_size,
                                head_width=head_width, drop_rate=drop_rate, drop_path_rate=drop_path_rate)


# --------------------------------------------------------------------------- the space

class MobileNetSpace(SearchSpace):
    """FBNet-style: 17 layers x (6 inverted residuals + skip) on MobileNetV2's stages."""

    name = "mobilenet"
    op_names = OP_NAMES
    gdas_gate = GDAS_GATE  # the default GDAS gradient rule (model.gdas_gate="")

    supernet_arguments = frozenset({"C", "N", "input_size", "head_width", "gdas_gate", "aux_skip"})
    network_arguments = frozenset({"C", "N", "auxiliary", "drop_path_prob", "input_size", "head_width"})

    def op_traits(self) -> dict[str, OpTraits]:
        return dict(OP_TRAITS)

    def build_supernet(self, mode: str = "gdas", num_classes: int = 10, C: int = STEM_WIDTH, N: int = 4,
                       in_channels: int = 3, input_size: int = 32, head_width: int = HEAD_WIDTH,
                       gdas_gate: str = "", aux_skip: bool = False) -> MobileNetSupernet:
        return MobileNetSupernet(mode=mode, num_classes=num_classes, C=C, N=N, in_channels=in_channels,
                                 input_size=input_size, head_width=head_width, gdas_gate=gdas_gate,
                                 aux_skip=aux_skip)

    def build_network(self, genotype, num_classes: int = 10, C: int = STEM_WIDTH, N: int = 4, in_channels: int = 3,
                      auxiliary: bool = False, drop_path_prob: float = 0.0, input_size: int = 32,
                      head_width: int = HEAD_WIDTH) -> EfficientNet:
        """timm's EfficientNet; ``N`` is unused (the genotype fixes the depth), ``drop_path_prob`` is timm's
        stochastic depth (scaled up linearly over the blocks)."""
        if auxiliary:
            raise UserError("mobilenet networks have no auxiliary head; set train.auxiliary_weight=0")
        if isinstance(genotype, str):
            genotype = self.parse(genotype)
        return build_efficientnet(genotype, num_classes=num_classes, C=C, in_chans=in_channels,
                                  input_size=input_size, head_width=head_width, drop_path_rate=drop_path_prob)

    def derive_genotype(self, probabilities: dict[str, torch.Tensor], rule: str | None = None) -> MobileNetGenotype:
        # The argmax op of every layer among the ops it has (a masked skip is never chosen).
        if rule not in (None, "argmax"):
            raise UserError(f"unknown derivation rule {rule!r} for mobilenet; it has one: argmax")
        probs = torch.as_tensor(probabilities["layers"]).detach().float().cpu()
        rows = next((layer_rows(n) for n in range(1, 5) if len(layer_rows(n)) == len(probs)), None)
        if rows is None or probs.shape[1] != len(OP_NAMES):
            raise ValueError(f"probabilities['layers'] has shape {tuple(probs.shape)}, expected "
                             f"[L, {len(OP_NAMES)}] with L in {sorted({len(layer_rows(n)) for n in range(1, 5)})}")
        chosen = {}
        for (s, b), row in zip(rows, probs):
            chosen[s, b] = OP_NAMES[int(row[: len(OP_NAMES) if b > 0 else SKIP].argmax())]
        return self._from_layers(chosen)

    def parse(self, text: str) -> MobileNetGenotype:
        return MobileNetGenotype.parse(text)

    def format(self, genotype: MobileNetGenotype) -> str:
        return genotype.format()

    def edge_names(self) -> dict[str, list[str]]:
        return {"layers": [f"s{s}.b{b}" for s, b in layer_rows()]}

    def cell_graphs(self, genotype: MobileNetGenotype) -> dict[str, list[tuple[str, str, str]]]:
        names = ["in"] + [name for name, _ in genotype.layers()]
        return {"layers": [(names[i], names[i + 1], op) for i, (_, op) in enumerate(genotype.layers())]}

    def genotype_edges(self, genotype: MobileNetGenotype) -> list[tuple[str, int, str]]:
        # A derived genotype has min(repeats, N) layers per stage, so its longest stage gives N.
        rows = {sb: r for r, sb in enumerate(layer_rows(max(len(ops) for ops in genotype.stages)))}
        return [("layers", rows[s, b], op) for s, ops in enumerate(genotype.stages) for b, op in enumerate(ops)]

    def random_genotype(self, generator: torch.Generator | None = None) -> MobileNetGenotype:
        chosen = {}
        for s, b in layer_rows():
            chosen[s, b] = OP_NAMES[int(torch.randint(len(OP_NAMES) if b > 0 else SKIP, (1,), generator=generator))]
        return self._from_layers(chosen)

    @staticmethod
    def _from_layers(chosen: dict[tuple[int, int], str]) -> MobileNetGenotype:
        ordered = sorted(chosen.items())  # by (stage, block)
        return MobileNetGenotype(tuple(tuple(op for (s, _), op in ordered if s == stage) for stage in range(len(STAGES))))


MOBILENET_SPACE = register_space(MobileNetSpace())


def __getattr__(attr: str):
    # 0.1 path of the timm entry point, which moved to search_spaces.timm_models (kept for one release).
    if attr == "mobilenet_searched":
        from .timm_models import mobilenet_searched
        return mobilenet_searched
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
