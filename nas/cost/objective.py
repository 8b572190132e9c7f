"""Cost-aware search: per-op cost tables, the expected cost of a sample, and FBNet/additive losses.

The cost of an architecture is modelled as ``base + sum over choice layers of
cost(chosen op)``, where ``base`` is everything outside the choice layers
(stem, fixed blocks, head) and each op's cost is measured on the op alone at
the input shape its layer receives. A group's table ``[E, K]`` sums the costs
of the layers sharing a logit row (the same edge of every cell of a kind), so
for any sample

    expected_cost = base + sum_g (sample.coefficients[g] * tables[g]).sum()

which is the exact cost of the sampled network for a one-hot sample and is
differentiable w.r.t. the logits (straight-through for ``gdas``). Metrics:

* ``flops``: ``torch.utils.flop_counter.FlopCounterMode`` per image (a
  multiply-add counts 2; BN, activations, pooling, additions and conv/linear
  biases are not counted), as ``nas.engine.train.count_flops`` counts a network.
* ``params``: the parameters of each op *as built in the supernet* (search BN
  has no affine, NB201's search convs carry a bias), so it is a relative size
  measure, not the discrete network's exact count.
* ``latency``: milliseconds from a table written by ``python -m nas.cost.latency``.

Zero ops (those whose declared ``OpTraits`` say ``zero``, such as NB201's and
DARTS's ``none`` and the masked placeholders of a layer-wise space) cost 0.
"""
from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from ..sampling.architecture import ArchSample
from ..layers.choice import ChoiceLayer
from ..utils.errors import UserError
from ..layers.supernet import Supernet

METRICS = ("none", "flops", "params", "latency")
FORMS = ("fbnet", "additive")
PROBE_BATCH = 2  # shapes and FLOPs are probed with 2 images (BN needs > 1 value per channel) and divided by 2


@dataclass
class CostTables:
    """The cost model of a supernet.

    Attributes:
        metric: ``flops``, ``params`` or ``latency``.
        base: Cost of everything outside the choice layers.
        tables: group -> float64 ``[num_edges, num_ops]``, summed over the layers sharing a row.
        allowed: group -> bool ``[num_edges, num_ops]``, False for an op that does not exist on
            that edge (the architecture's mask, e.g. MobileNet's placeholder for a shape-changing
            layer's skip); its table entry of 0 is no cost any sample can have. None: every op exists.
    """

    metric: str
    base: float
    tables: dict[str, torch.Tensor]
    allowed: dict[str, torch.Tensor] | None = None

    def to(self, device: torch.device | str) -> "CostTables":
        allowed = None if self.allowed is None else {g: m.to(device) for g, m in self.allowed.items()}
        return CostTables(self.metric, self.base, {g: t.to(device) for g, t in self.tables.items()}, allowed)


def layer_names(supernet: Supernet) -> dict[int, str]:
    """``id(choice layer)`` -> its qualified module name (how latency tables address a layer)."""
    return {id(m): name for name, m in supernet.named_modules() if isinstance(m, ChoiceLayer)}


@torch.no_grad()
def capture_shapes(supernet: Supernet, input_shape: tuple[int, ...]) -> dict[int, tuple[tuple, tuple]]:
    """Per-image ``(input, output)`` shape of every choice layer, keyed by ``id(layer)``.

    One forward of ``PROBE_BATCH`` zero images under the argmax sample, in eval
    mode (every op of a layer maps the same input shape to the same output shape,
    so one op per layer is enough).
    """
    shapes: dict[int, tuple[tuple, tuple]] = {}

    def record(layer: nn.Module, args: tuple, output: torch.Tensor) -> None:
        shapes[id(layer)] = (tuple(args[0].shape[1:]), tuple(output.shape[1:]))

    hooks = [layer.register_forward_hook(record) for _, _, layer in supernet.choice_layers()]
    was_training = supernet.training
    supernet.eval()
    try:
        x = torch.zeros(PROBE_BATCH, *input_shape, device=_device(supernet))
        supernet.forward_sample(x, supernet.architecture.derive("gdas"))
    finally:
        supernet.train(was_training)
        for hook in hooks:
            hook.remove()
    return shapes


@contextlib.contextmanager
def stubbed_choice_layers(supernet: Supernet, shapes: dict[int, tuple[tuple, tuple]]) -> Iterator[None]:
    """Within the block, every choice layer returns zeros of its output shape and runs no op.

    A forward of the supernet then costs exactly its ``base`` (stem, fixed blocks, head).
    """
    layers = [layer for _, _, layer in supernet.choice_layers()]
    for layer in layers:
        out_shape = shapes[id(layer)][1]
        layer.forward = lambda x, *args, _shape=out_shape, **kwargs: x.new_zeros(x.shape[0], *_shape)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def cost_tables(supernet: Supernet, input_shape: tuple[int, ...], metric: str,
                latency_table: str | Path | dict | None = None) -> CostTables:
    """Measures the cost tables of a supernet.

    Args:
        supernet: Any supernet implementing ``choice_layers()``; it runs on its own device.
        input_shape: One image, ``(C, H, W)``.
        metric: ``flops``, ``params`` or ``latency``.
        latency_table: For ``latency``: the JSON file (or its loaded dict) of ``python -m nas.cost.latency``.

    Returns:
        ``CostTables`` on the supernet's device.
    """
    if metric not in METRICS[1:]:
        raise UserError(f"unknown cost metric {metric!r}; choose from {', '.join(METRICS[1:])}")
    layers = supernet.choice_layers()
    groups = {g: l.shape for g, l in supernet.architecture.logits.items()}
    tables = {g: torch.zeros(shape, dtype=torch.float64) for g, shape in groups.items()}
    shapes = capture_shapes(supernet, input_shape)
    if metric == "latency":
        base, per_layer = _read_latency(latency_table, supernet, shapes)
    elif metric == "params":
        arch = {id(p) for p in supernet.arch_parameters()}
        in_layers = {id(p) for _, _, layer in layers for p in layer.parameters()}
        base = float(sum(p.numel() for p in supernet.parameters() if id(p) not in arch | in_layers))
        per_layer = {id(layer): [0.0 if traits.zero else float(sum(p.numel() for p in op.parameters()))
                                 for traits, op in zip(layer.traits, layer.ops)] for _, _, layer in layers}
    else:
        base, per_layer = _flops(supernet, input_shape, shapes)
    for group, edge, layer in layers:
        tables[group][edge] += torch.tensor(per_layer[id(layer)], dtype=torch.float64)
    device = _device(supernet)
    arch = supernet.architecture
    allowed = {g: getattr(arch, f"allowed_{g}").cpu() for g in arch.masked} or None
    return CostTables(metric, float(base), tables, allowed).to(device)


@torch.no_grad()
def measure_ops(supernet: Supernet, input_shape: tuple[int, ...], shapes: dict, batch: int,
                measure: Callable[[Callable[[], object]], float],
                make_input: Callable[..., torch.Tensor] = torch.zeros) -> tuple[float, dict[int, list[float]]]:
    """Applies ``measure`` to the supernet's fixed part and to every candidate op (eval mode).

    Args:
        supernet: The supernet (on its device).
        input_shape: One image, ``(C, H, W)``.
        shapes: ``capture_shapes``'s result.
        batch: Images per measured forward pass.
        measure: Takes a zero-argument callable (one forward pass) and returns its cost.
        make_input: Builds the input tensors (``torch.zeros``, ``torch.randn``, ...).

    Returns:
        ``(base, per_layer)``: the cost of a forward pass with every choice layer stubbed,
        and choice layer id -> the cost of each op on that layer's input (0 for a zero op).
    """
    device = _device(supernet)
    was_training = supernet.training
    supernet.eval()
    try:
        with stubbed_choice_layers(supernet, shapes):
            x = make_input(batch, *input_shape, device=device)
            sample = supernet.architecture.derive("gdas")
            base = measure(lambda: supernet.forward_sample(x, sample))
        per_layer = {}
        for _, _, layer in supernet.choice_layers():
            x = make_input(batch, *shapes[id(layer)][0], device=device)  # [batch, C_in, H, W]
            per_layer[id(layer)] = [0.0 if traits.zero else measure(lambda: op(x))
                                    for traits, op in zip(layer.traits, layer.ops)]
    finally:
        supernet.train(was_training)
    return base, per_layer


def _flops(supernet: Supernet, input_shape: tuple[int, ...], shapes: dict) -> tuple[float, dict[int, list[float]]]:
    base, per_layer = measure_ops(supernet, input_shape, shapes, PROBE_BATCH, _count)
    return base / PROBE_BATCH, {k: [v / PROBE_BATCH for v in values] for k, values in per_layer.items()}


def _count(run) -> float:
    with FlopCounterMode(display=False) as counter:
        run()
    return float(counter.get_total_flops())


def _read_latency(table: str | Path | dict | None, supernet: Supernet, shapes: dict):
    if table is None or table == "":
        raise UserError("the latency cost needs a table: write one with python -m nas.cost.latency and set cost.table")
    where = "the latency table" if isinstance(table, dict) else f"latency table {str(table)!r}"
    if not isinstance(table, dict):
        try:
            table = json.loads(Path(table).read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read {where}: {str(e).splitlines()[0]}") from None
    redo = "rerun python -m nas.cost.latency with this run's space, C, N, input size and channels"
    try:
        entries = {entry["name"]: entry for entry in table["layers"]}
        base = float(table["base_ms"])
    except (KeyError, TypeError):
        raise UserError(f"{where} is not a table written by python -m nas.cost.latency") from None
    names = layer_names(supernet)
    per_layer = {}
    for group, edge, layer in supernet.choice_layers():
        name = names[id(layer)]
        entry = entries.get(name)
        if entry is None or entry.get("group") != group or entry.get("edge") != edge:
            raise UserError(f"{where} has no entry for choice layer {name!r} ({group}, edge {edge}); {redo}")
        if list(entry.get("ops", [])) != layer.op_names or tuple(entry.get("input_shape", ())) != shapes[id(layer)][0]:
            raise UserError(f"{where} measured {name!r} with other ops or another input shape "
                            f"({entry.get('input_shape')} vs {list(shapes[id(layer)][0])}); {redo}")
        per_layer[id(layer)] = [0.0 if traits.zero else float(ms) for traits, ms in zip(layer.traits, entry["ms"])]
    return base, per_layer


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


# --------------------------------------------------------------------------- objective

def expected_cost(sample: ArchSample, tables: CostTables) -> torch.Tensor:
    """``base + sum_g (coefficients[g] * tables[g]).sum()``: a float64 scalar, differentiable w.r.t. the logits."""
    total = None
    for group, table in tables.tables.items():
        coefficients = sample.coefficients[group]  # [E, K]
        term = (coefficients.double() * table.to(coefficients.device)).sum()
        total = term if total is None else total + term
    return total + tables.base


class CostObjective:
    """Adds the expected cost of the arch step's sample to its cross-entropy.

    Forms:

    * ``fbnet`` (Wu et al., 2019): ``ce * alpha * log(cost) ** beta``. Needs
      ``cost > 1`` in the metric's unit, checked on the cheapest architecture.
    * ``additive``: ``ce + lam * (cost - target) / target``.

    Args:
        tables: The cost model.
        form: ``fbnet`` or ``additive``.
        target: The target cost, same unit as the metric (``additive`` only, > 0).
        alpha, beta: FBNet's coefficients (0.2, 0.6 in the paper).
        lam: Weight of the additive term.
    """

    def __init__(self, tables: CostTables, form: str = "fbnet", target: float = 0.0, alpha: float = 0.2,
                 beta: float = 0.6, lam: float = 1.0):
        if form not in FORMS:
            raise UserError(f"unknown cost form {form!r}; choose from {', '.join(FORMS)}")
        if form == "additive" and not target > 0:
            raise UserError(f"the additive cost form needs a target > 0, got {target}")
        self.tables, self.form = tables, form
        self.target, self.alpha, self.beta, self.lam = float(target), float(alpha), float(beta), float(lam)
        cheapest, _ = self.bounds()
        if form == "fbnet" and not cheapest > 1.0:
            raise UserError(f"the fbnet cost form takes log(cost), which must be > 0, but the cheapest "
                            f"architecture may cost {cheapest:g} {tables.metric}; use cost.form=additive")

    def bounds(self) -> tuple[float, float]:
        """The cost of the cheapest and of the dearest hard sample: the cheapest / dearest op that
        exists on every row (masked ops are never sampled, so their placeholder 0 is no bound)."""
        low = high = self.tables.base
        for group, table in self.tables.tables.items():
            mask = None if self.tables.allowed is None else self.tables.allowed.get(group)
            exists = torch.ones_like(table, dtype=torch.bool) if mask is None else mask.to(table.device)
            low += float(table.masked_fill(~exists, math.inf).min(dim=1).values.sum())
            high += float(table.masked_fill(~exists, -math.inf).max(dim=1).values.sum())
        return low, high

    def expected(self, sample: ArchSample) -> torch.Tensor:
        """The expected cost of a sample (float64 scalar, differentiable)."""
        return expected_cost(sample, self.tables)

    def loss(self, ce: torch.Tensor, sample: ArchSample) -> torch.Tensor:
        """The cost-aware loss of a cross-entropy and the sample it was computed under, in ``ce``'s dtype."""
        cost = self.expected(sample)
        if self.form == "fbnet":
            return (ce.double() * self.alpha * torch.log(cost) ** self.beta).to(ce.dtype)
        return (ce.double() + self.lam * (cost - self.target) / self.target).to(ce.dtype)

    @torch.no_grad()
    def derived_cost(self, genotype_sample: ArchSample) -> float:
        """The cost of a genotype's network: ``Supernet.genotype_sample(space.genotype_edges(genotype))``
        counts every op the genotype keeps (two on an edge that keeps two) and none on a dropped edge."""
        return float(self.expected(genotype_sample))

    @classmethod
    def from_config(cls, config: "CostConfig", supernet: Supernet,
                    input_shape: tuple[int, ...]) -> "CostObjective | None":
        """The objective of a ``cost`` config section; None when ``metric`` is ``none``."""
        config.validate()
        if config.metric == "none":
            return None
        tables = cost_tables(supernet, tuple(input_shape), config.metric, latency_table=config.table or None)
        return cls(tables, form=config.form, target=config.target, alpha=config.alpha, beta=config.beta,
                   lam=config.lam)


@dataclass
class CostConfig:
    """The ``cost`` section of a run config (metric ``none`` turns the cost term off)."""

    metric: str = "none"          # none | flops | params | latency
    form: str = "fbnet"           # fbnet: ce * alpha * log(cost) ** beta | additive: ce + lam * (cost - target) / target
    target: float = 0.0           # target cost in the metric's unit (FLOPs, parameters, ms); additive: > 0
    alpha: float = 0.2            # FBNet's alpha
    beta: float = 0.6             # FBNet's beta
    lam: float = 1.0              # weight of the additive term
    table: str = ""               # latency: the JSON of python -m nas.cost.latency

    def validate(self) -> None:
        """Range and choice checks; ``UserError`` naming the key ``cost.<field>``."""
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise UserError(f"config key 'cost.{key}' {what}")
        need(self.metric in METRICS, "metric", f"must be one of {', '.join(METRICS)}, got {self.metric!r}")
        need(self.form in FORMS, "form", f"must be one of {', '.join(FORMS)}, got {self.form!r}")
        for key in ("target", "alpha", "beta", "lam"):
            value = getattr(self, key)
            need(isinstance(value, (int, float)) and math.isfinite(value) and value >= 0, key,
                 f"must be a finite number >= 0, got {value!r}")
        need(self.metric == "none" or self.form != "additive" or self.target > 0, "target",
             f"must be > 0 for cost.form=additive (in the unit of cost.metric), got {self.target}")
        if self.metric == "latency":
            need(bool(self.table), "table", "must name the JSON of python -m nas.cost.latency for cost.metric=latency")
            need(Path(self.table).is_file(), "table",
                 f"names {self.table!r}, which does not exist; write it with python -m nas.cost.latency")
