"""``ModuleSpace``: a search space made from a user's ``nn.Module`` marked with ``LayerChoice``s.

The factory (a module class or a function returning a module) builds the network
with its LayerChoices; the space finds them (by label, else by module path), gives
them one logit table ``choices`` ``[num_labels, num_ops]`` in one ``Architecture``
(the columns are the union of the candidate names, first seen first; a column a
choice does not offer is masked) and runs one sample per forward pass through
them. The genotype is one candidate per label, written ``label=candidate,...``
(e.g. ``layers.0=conv3,layers.1=conv5``); its network is the factory's module
with every LayerChoice replaced by its chosen candidate.

The labels and candidates must not depend on the factory's arguments: the space
reads them once from a module built with the factory's defaults.
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn

from ..layers.gates import GATE_RULES, SAMPLED_OP
from ..layers.layer_choice import LayerChoice, find_layer_choices
from ..layers.op_traits import OpTraits
from ..layers.supernet import Supernet
from ..sampling.architecture import Architecture, ArchSample
from ..utils.errors import UserError
from .space import SearchSpace

GROUP = "choices"
# What the factory may take, and what it gets when the space reads its structure without a build.
FACTORY_ARGUMENTS = {"num_classes": 10, "in_channels": 3, "C": 16, "N": 5, "input_size": 32}
CONFIG_ARGUMENTS = ("C", "N", "input_size")  # the optional ones: model.C, model.N, the image side


@dataclass(frozen=True)
class ModuleGenotype:
    """The chosen candidate of every label, in logit row order."""

    choices: tuple[tuple[str, str], ...]

    def format(self) -> str:
        return ",".join(f"{label}={op}" for label, op in self.choices)

    def as_dict(self) -> dict[str, str]:
        return dict(self.choices)


@dataclass(frozen=True)
class Structure:
    """What a factory's module offers: the labels (logit rows), the op columns and which exist where."""

    labels: tuple[str, ...]
    op_names: tuple[str, ...]
    candidates: tuple[tuple[str, ...], ...]  # per label, its candidate names
    traits: tuple[tuple[str, OpTraits], ...]  # per op column, its traits

    def allowed(self) -> torch.Tensor:
        """bool ``[num_labels, num_ops]``: True where a label offers the op."""
        return torch.tensor([[op in offered for op in self.op_names] for offered in self.candidates])


def _call_factory(factory: Callable[..., nn.Module], arguments: dict[str, Any], who: str) -> nn.Module:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C callable: give it nothing
        params = {}
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in arguments.items() if takes_all or k in params}
    module = factory(**kwargs)
    if not isinstance(module, nn.Module):
        raise UserError(f"{who} returned a {type(module).__name__}, not an nn.Module; it must build the network")
    return module


def structure_of(module: nn.Module, who: str) -> tuple[Structure, list[tuple[str, str, LayerChoice]]]:
    """The structure of a module's LayerChoices, and the LayerChoices ``(path, label, layer)``."""
    try:
        found = find_layer_choices(module)
    except ValueError as e:
        raise UserError(f"{who}: {e}") from None
    if not found:
        raise UserError(f"{who} builds no LayerChoice; mark the layers to search with nas.LayerChoice({{...}})")
    labels: dict[str, tuple[str, ...]] = {}
    traits: dict[str, tuple[OpTraits, str]] = {}  # op column -> its traits and where first seen, in order
    for path, label, layer in found:
        names = tuple(layer.candidate_names)
        if labels.setdefault(label, names) != names:
            raise UserError(f"{who}: LayerChoices labelled {label!r} offer different candidates "
                            f"({', '.join(labels[label])} vs {', '.join(names)}); a shared label needs the same ones")
        for name in names:
            first = traits.setdefault(name, (layer.traits[name], path))
            if first[0] != layer.traits[name]:
                raise UserError(f"{who}: candidates named {name!r} have different traits ({_brief(first[0])} at "
                                f"{first[1]!r}, {_brief(layer.traits[name])} at {path!r}); name different ops "
                                "differently or pass LayerChoice(traits=...)")
    return (Structure(tuple(labels), tuple(traits), tuple(labels.values()),
                      tuple((name, t) for name, (t, _) in traits.items())), found)


def _brief(traits: OpTraits) -> str:
    return "+".join(k.replace("_", "-") for k in ("zero", "parameter_free", "skip") if getattr(traits, k)) or "learned"


class ModuleSupernet(Supernet):
    """The user's module as a supernet: each forward pass hands every LayerChoice its sample row.

    Args:
        module: The factory's module (its LayerChoices are widened to the space's op columns).
        structure: Its ``Structure``.
        mode: ``gdas``, ``snas`` or ``darts``.
        gdas_gate: The GDAS rule for unsampled ops (``nas.layers.gates``; default ``sampled_op``).
    """

    def __init__(self, module: nn.Module, structure: Structure, layers: list[tuple[str, str, LayerChoice]],
                 mode: str = "gdas", gdas_gate: str = SAMPLED_OP):
        allowed = structure.allowed()
        masks = {} if bool(allowed.all()) else {GROUP: allowed}
        super().__init__(Architecture({GROUP: tuple(allowed.shape)}, list(structure.op_names), allowed=masks), mode)
        self.net = module
        self.structure = structure
        self.rows = [structure.labels.index(label) for _, label, _ in layers]
        self._layers = [layer for _, _, layer in layers]  # a plain list: they are registered under self.net
        for layer in {id(l): l for l in self._layers}.values():
            layer.bind(list(structure.op_names), gdas_gate)

    def forward_sample(self, x: torch.Tensor, sample: ArchSample) -> torch.Tensor:
        # x: the user's input (e.g. [B, C, H, W]) -> the user's output (e.g. logits [B, num_classes])
        coefficients = sample.coefficients[GROUP]  # [num_labels, num_ops]
        indices = None if sample.indices is None else sample.indices[GROUP]
        for layer, row in zip(self._layers, self.rows):
            layer.current = (coefficients[row], None if indices is None else indices[row])
        try:
            return self.net(x)
        finally:
            for layer in self._layers:
                layer.current = None

    def choice_layers(self):
        return [(GROUP, row, layer.choice) for layer, row in zip(self._layers, self.rows)]


def replace_choices(module: nn.Module, genotype: ModuleGenotype, who: str) -> nn.Module:
    """``module`` (changed in place) with each LayerChoice replaced by the genotype's candidate for its label."""
    chosen = genotype.as_dict()
    for path, label, layer in find_layer_choices(module):
        if label not in chosen:
            raise UserError(f"the genotype {genotype.format()!r} has no choice for label {label!r} of {who}")
        parent_path, _, name = path.rpartition(".")
        parent = module.get_submodule(parent_path) if parent_path else module
        setattr(parent, name, layer.candidate(chosen[label]))
    return module


class ModuleSpace(SearchSpace):
    """A search space from a module factory whose network contains ``LayerChoice``s.

    Args:
        factory: A module class or function; it may take any of ``num_classes``, ``in_channels``,
            ``C``, ``N``, ``input_size`` (from the config), and gets only those it names.
        name: The space's name (genotype files record it; ``nas.spaces.loader`` sets the
            ``module:attribute`` it was loaded from, so any command can load it again).
    """

    def __init__(self, factory: Callable[..., nn.Module], name: str | None = None):
        if not callable(factory):
            raise UserError(f"a ModuleSpace needs a module class or function, got a {type(factory).__name__}")
        self.factory = factory
        self.name = name or getattr(factory, "__qualname__", type(factory).__name__)
        self._structure: Structure | None = None
        # Declared builder arguments (``SearchSpace.supernet_arguments``): the config values the factory names,
        # so a setting it does not take (model.N for a factory without N) is refused, not ignored.
        taken = frozenset(a for a in CONFIG_ARGUMENTS if _takes(factory, a))
        self.supernet_arguments = taken | {"gdas_gate"}
        self.network_arguments = taken

    # ------------------------------------------------------------------ structure

    @property
    def who(self) -> str:
        return f"the space {self.name!r}"

    @property
    def structure(self) -> Structure:
        """The labels and candidates, read once from a module built with the factory's defaults."""
        if self._structure is None:
            params = _required_parameters(self.factory)
            module = _call_factory(self.factory, {k: v for k, v in FACTORY_ARGUMENTS.items() if k in params},
                                   self.who)
            self._structure = structure_of(module, self.who)[0]
        return self._structure

    @property
    def op_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.structure.op_names

    def op_traits(self) -> dict[str, OpTraits]:
        """Each op column's traits, as its candidates declare them (see ``LayerChoice``)."""
        return dict(self.structure.traits)

    def _build(self, arguments: dict[str, Any]) -> tuple[nn.Module, list]:
        module = _call_factory(self.factory, arguments, self.who)
        structure, layers = structure_of(module, self.who)
        if structure != self.structure:
            raise UserError(f"the LayerChoices of {self.name!r} change with its arguments "
                            f"({', '.join(f'{k}={v}' for k, v in arguments.items())}); a module space needs the "
                            "same labels and candidates for every argument")
        return module, layers

    # ------------------------------------------------------------------ networks

    def _factory_arguments(self, given: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(given) - self.network_arguments)
        if unknown:
            raise TypeError(f"{self.name!r}'s factory does not take {unknown} (it takes {sorted(self.network_arguments)})")
        return given

    def build_supernet(self, mode: str = "gdas", num_classes: int = 10, in_channels: int = 3, gdas_gate: str = "",
                       **factory_arguments: Any) -> ModuleSupernet:
        """The factory's module as a supernet.

        Args:
            mode, num_classes, in_channels: As every space (the factory gets the last two if it names them).
            gdas_gate: The GDAS rule for unsampled ops ("" means ``sampled_op``).
            factory_arguments: ``C``, ``N``, ``input_size``: those the factory names (``supernet_arguments``).
        """
        if gdas_gate and gdas_gate not in GATE_RULES:
            raise UserError(f"unknown GDAS gate rule {gdas_gate!r}; choose from {', '.join(GATE_RULES)}")
        module, layers = self._build(dict(num_classes=num_classes, in_channels=in_channels,
                                          **self._factory_arguments(factory_arguments)))
        return ModuleSupernet(module, self.structure, layers, mode=mode, gdas_gate=gdas_gate or SAMPLED_OP)

    def build_network(self, genotype: Any, num_classes: int = 10, in_channels: int = 3,
                      **factory_arguments: Any) -> nn.Module:
        """The genotype's network with fresh weights (for training from scratch); ``factory_arguments``
        as ``build_supernet``'s. It has no auxiliary head or drop path (those settings are refused)."""
        genotype = self.parse(genotype) if isinstance(genotype, str) else genotype
        module, _ = self._build(dict(num_classes=num_classes, in_channels=in_channels,
                                     **self._factory_arguments(factory_arguments)))
        network = replace_choices(module, genotype, self.who)
        network.genotype = genotype
        return network

    def derive_module(self, supernet: ModuleSupernet, genotype: Any) -> nn.Module:
        """The genotype's network with the supernet's weights: a copy of the supernet's module with every
        LayerChoice replaced by its chosen candidate (in eval mode it computes what the supernet computes
        under ``genotype_sample`` of the genotype)."""
        genotype = self.parse(genotype) if isinstance(genotype, str) else genotype
        return replace_choices(copy.deepcopy(supernet.net), genotype, self.who)

    # ------------------------------------------------------------------ genotypes

    def derive_genotype(self, probabilities: dict[str, torch.Tensor], rule: str | None = None) -> ModuleGenotype:
        """The most probable offered candidate of every label."""
        if rule not in (None, "argmax"):
            raise UserError(f"unknown derivation rule {rule!r} for {self.name}; it has one: argmax")
        s = self.structure
        probs = torch.as_tensor(probabilities[GROUP]).detach().double().cpu()
        if tuple(probs.shape) != (len(s.labels), len(s.op_names)):
            raise ValueError(f"probabilities[{GROUP!r}] has shape {tuple(probs.shape)}, "
                             f"expected {(len(s.labels), len(s.op_names))}")
        probs = probs.masked_fill(~s.allowed(), float("-inf"))
        return ModuleGenotype(tuple((label, s.op_names[int(row.argmax())]) for label, row in zip(s.labels, probs)))

    def parse(self, text: str) -> ModuleGenotype:
        """Parses ``label=candidate,...`` (every label once); ``UserError`` naming the problem if malformed."""
        s, text = self.structure, str(text).strip()
        shown = text if len(text) <= 80 else text[:77] + "..."
        example = ",".join(f"{label}={offered[0]}" for label, offered in zip(s.labels, s.candidates))
        chosen = {}
        for part in text.split(","):
            label, eq, op = (p.strip() for p in part.partition("="))
            why = ("a part is not label=candidate" if not eq or not label or not op else
                   f"unknown label {label!r}" if label not in s.labels else
                   f"label {label!r} appears twice" if label in chosen else
                   f"{label!r} has no candidate {op!r} (it has {', '.join(s.candidates[s.labels.index(label)])})"
                   if op not in s.candidates[s.labels.index(label)] else "")
            if why:
                raise UserError(f"malformed {self.name} genotype {shown!r}: {why}; expected e.g. {example!r}")
            chosen[label] = op
        missing = [label for label in s.labels if label not in chosen]
        if missing:
            raise UserError(f"malformed {self.name} genotype {shown!r}: no choice for {', '.join(missing)}; "
                            f"expected e.g. {example!r}")
        return ModuleGenotype(tuple((label, chosen[label]) for label in s.labels))

    def format(self, genotype: ModuleGenotype) -> str:
        return genotype.format()

    def edge_names(self) -> dict[str, list[str]]:
        return {GROUP: list(self.structure.labels)}

    def cell_graphs(self, genotype: ModuleGenotype) -> dict[str, list[tuple[str, str, str]]]:
        names = ["in"] + [label for label, _ in genotype.choices]
        return {GROUP: [(names[i], names[i + 1], op) for i, (_, op) in enumerate(genotype.choices)]}

    def genotype_edges(self, genotype: ModuleGenotype) -> list[tuple[str, int, str]]:
        labels = self.structure.labels
        return [(GROUP, labels.index(label), op) for label, op in genotype.choices]

    def random_genotype(self, generator: torch.Generator | None = None) -> ModuleGenotype:
        s = self.structure
        return ModuleGenotype(tuple(
            (label, offered[int(torch.randint(len(offered), (1,), generator=generator))])
            for label, offered in zip(s.labels, s.candidates)))


def _takes(factory: Callable, name: str) -> bool:
    """Whether the factory names the argument ``name`` (or takes ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _required_parameters(factory: Callable) -> set[str]:
    """The factory's parameters without a default (the structure read passes standard values for them)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {p.name for p in params if p.default is inspect.Parameter.empty
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
