"""The module paths of the flat 0.1 layout, kept importable for one release.

``import nas.gumbel`` (or ``from nas.search import Searcher``) still works: the
old name resolves to the module's new home and warns once with a
``DeprecationWarning`` naming it. ``nas.report``, ``nas.cost``, ``nas.cli`` and
``nas.experiment`` are packages now and re-export what their modules exported.
The list is also in CHANGELOG.md.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "nas.errors": "nas.utils.errors",
    "nas.yamlio": "nas.utils.yamlio",
    "nas.gumbel": "nas.sampling.gumbel",
    "nas.architecture": "nas.sampling.architecture",
    "nas.sdarts": "nas.sampling.sdarts",
    "nas.straight_through": "nas.layers.gates",
    "nas.frozen_relu_conv": "nas.layers.frozen_relu_conv",
    "nas.ops": "nas.layers.ops",
    "nas.choice": "nas.layers.choice",
    "nas.batch_statistics": "nas.layers.batch_statistics",
    "nas.supernet": "nas.layers.supernet",
    "nas.registry": "nas.spaces.registry",
    "nas.space": "nas.spaces.space",
    "nas.genotype": "nas.spaces.genotype",
    "nas.derive": "nas.spaces.derive",
    "nas.latency": "nas.cost.latency",
    "nas.loop": "nas.engine.loop",
    "nas.search": "nas.engine.search",
    "nas.train": "nas.engine.train",
    "nas.checkpoint": "nas.engine.checkpoint",
    "nas.distributed": "nas.engine.distributed",
    "nas.report_figures": "nas.report.figures",
    "nas.tensorboard": "nas.report.tensorboard",
    "nas.build": "nas.cli.build",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module path to the already-importable module at its new path."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; the old path will be removed in the next release",
                      DeprecationWarning, stacklevel=3)
        return importlib.import_module(new)

    def exec_module(self, module):
        pass  # the module at the new path is already executed


def install() -> None:
    """Puts the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
