"""Imports flow one way: from the command-line layer down to sampling, never back up.

Reads every import statement (also the ones inside functions) of every module in
``nas/`` and ``search_spaces/`` and fails when a module imports one of a higher
layer. The order is the path of a batch read backwards (docs/architecture.md).
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A module may import its own layer and the layers before it.
LAYERS = ["nas.utils", "nas.sampling", "nas.layers", "nas.spaces", "search_spaces", "nas.cost", "nas.data",
          "nas.config", "nas.engine", "nas.report", "nas.cli", "nas.experiment"]
# The package's front door re-exports from below and installs the old-path finder: it belongs to no layer.
FACADES = {"nas", "nas._compat"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int | None:
    for rank, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None


def imported_modules(path: Path, module: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module) for every import of a ``nas``/``search_spaces`` module in ``path``."""
    module = module or module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            # `from pkg import submodule` imports the submodule
            out += [(node.lineno, f"{target}.{a.name}") for a in node.names]
    return [(line, name) for line, name in out if name.split(".")[0] in ("nas", "search_spaces")]


SOURCES = sorted(p for d in ("nas", "search_spaces") for p in (ROOT / d).rglob("*.py"))


def test_every_module_is_in_a_layer():
    """A new subpackage must be placed in LAYERS (and in docs/architecture.md) before it is used."""
    homeless = [module_name(p) for p in SOURCES if module_name(p) not in FACADES and layer_of(module_name(p)) is None]
    assert not homeless, f"modules outside every layer: {homeless}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_a_higher_layer(path):
    module = module_name(path)
    if module in FACADES:
        return
    own = layer_of(module)
    upward = []
    for line, target in imported_modules(path):
        rank = layer_of(target)
        if target in FACADES or target.startswith("nas._compat"):
            rank = None if target == "nas._compat" else -1  # importing the facade drags in every layer below it
            if rank == -1:
                upward.append(f"line {line}: {target} (the package facade; import the module itself)")
                continue
        if rank is not None and rank > own:
            upward.append(f"line {line}: {target} ({LAYERS[rank]} is above {LAYERS[own]})")
    assert not upward, f"{module} imports upward:\n" + "\n".join(upward)


def test_no_module_uses_an_old_flat_path():
    """Inside the package the moved modules are imported at their new homes, not through the compatibility finder."""
    from nas._compat import MOVED

    old = []
    for path in SOURCES:
        for line, target in imported_modules(path):
            if any(target == m or target.startswith(m + ".") for m in MOVED):
                old.append(f"{module_name(path)} line {line}: {target}")
    assert not old, "old module paths used:\n" + "\n".join(old)


def test_old_paths_still_import_with_a_deprecation_warning():
    import importlib
    import sys

    import nas
    import nas.engine.search

    sys.modules.pop("nas.search", None)
    with pytest.warns(DeprecationWarning, match="nas.search moved to nas.engine.search"):
        old = importlib.import_module("nas.search")
    assert old is nas.engine.search and old.Searcher is nas.engine.search.Searcher
    assert nas.__version__


def test_the_layering_test_sees_an_upward_import(tmp_path):
    """The checker itself: a sampling module importing the engine (lazily, inside a function) is caught."""
    probe = tmp_path / "probe.py"
    probe.write_text("import torch\n\ndef f():\n    from ..engine.search import Searcher\n    return Searcher\n")
    imports = imported_modules(probe, module="nas.sampling.probe")
    assert imports == [(4, "nas.engine.search.Searcher")]
    assert layer_of(imports[0][1]) > layer_of("nas.sampling.probe")


def test_the_map_in_docs_matches_the_tree():
    """docs/architecture.md names every module, and every module path it names exists."""
    import re

    text = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`((?:nas|search_spaces)/[\w/]*\.py)`", text))
    tree = {str(p.relative_to(ROOT)) for p in SOURCES}
    folders = {str(p.parent.relative_to(ROOT)) for p in SOURCES}
    missing = sorted(p for p in tree - named
                     if p not in ("nas/__init__.py", "nas/_compat.py")
                     and not (p.endswith("__init__.py") and f"`{str(Path(p).parent)}/`" in text))
    assert not missing, f"modules missing from docs/architecture.md: {missing}"
    stale = sorted(p for p in named if not (ROOT / p).exists())
    assert not stale, f"docs/architecture.md names files that do not exist: {stale}"
    for folder in sorted(folders):
        assert f"`{folder}/`" in text or folder in ("nas",), f"docs/architecture.md has no section for {folder}/"
