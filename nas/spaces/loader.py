"""A search space named by the user's module: ``model.space=my_package.spaces:ChainSpace``.

``get_space`` sends every name with a ``:`` here. The module is imported (the
working directory is searched too), the attribute taken, and turned into a
space: a ``SearchSpace`` instance or subclass as it is, anything else callable
(a module class or a function building a module with ``LayerChoice``s) as a
``ModuleSpace``. The space is registered under the full ``module:attribute``
name and takes it as its ``name``, so the genotype files and run configs a
search writes name it, and ``train_final.py``, ``python -m nas.report`` and
``python -m nas.experiment`` (also in its worker processes) load it again.

Naming a module imports it, which runs its code as any Python import does: only
a config (or the command line) names one; a genotype file never does
(``nas.spaces.genotype``).
"""
from __future__ import annotations

import copy
import importlib
import inspect
import os
import sys

import torch.nn as nn

from ..utils.errors import UserError
from .module_space import ModuleSpace
from .registry import SEARCH_SPACES
from .space import SearchSpace, register_space

FORM = "'package.module:Attribute'"


def is_module_spec(name: str) -> bool:
    """Whether a space name names a user's module (``module:attribute``) instead of a registered space."""
    return isinstance(name, str) and ":" in name


def load_space(spec: str) -> SearchSpace:
    """The space ``module:attribute`` names (imported once, then registered under ``spec``).

    Raises:
        UserError: one line for a malformed name, a module that is not found, a missing
            attribute or an attribute that is not a space or module factory.
    """
    if spec in SEARCH_SPACES:
        return SEARCH_SPACES.get(spec)
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute or ":" in attribute or not all(
            part.isidentifier() for part in module_name.split(".") + attribute.split(".")):
        raise UserError(f"space {spec!r} is not a registered name or a {FORM}; "
                        f"name your space as e.g. model.space=examples.chain_space:ChainSpace")
    if os.getcwd() not in sys.path and "" not in sys.path:  # a user's package next to where the command runs
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise UserError(f"space {spec!r}: no module named {e.name!r}; run from the directory that holds it "
                            "or add that directory to PYTHONPATH") from None
        raise UserError(f"space {spec!r}: importing {module_name!r} failed: {e}; install what it imports") from None
    obj = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in vars(module) if not n.startswith("_"))[:12]
            raise UserError(f"space {spec!r}: module {module_name!r} has no attribute {attribute!r}; "
                            f"it has {', '.join(public) or 'no public names'}")
        obj = getattr(obj, part)
    space = _as_space(obj, spec)
    try:
        return register_space(space)
    except ValueError as e:  # its op traits are not declared for exactly its ops
        raise UserError(f"space {spec!r}: {e}") from None


def _as_space(obj: object, spec: str) -> SearchSpace:
    if isinstance(obj, SearchSpace):
        space = copy.copy(obj)  # the user's instance keeps its own name
    elif isinstance(obj, type) and issubclass(obj, SearchSpace):
        space = obj()
    elif isinstance(obj, nn.Module):
        raise UserError(f"space {spec!r} is an nn.Module instance; name its class or a function that builds it")
    elif (isinstance(obj, type) and issubclass(obj, nn.Module)) or inspect.isfunction(obj):
        space = ModuleSpace(obj, name=spec)
        space.structure  # builds the module once: a factory without LayerChoices fails here, in one line
    else:
        raise UserError(f"space {spec!r} is a {type(obj).__name__}; it must be a SearchSpace (class or instance), "
                        "an nn.Module class or a Python function whose network contains LayerChoices")
    space.name = spec
    return space
