"""Genotype files: ``genotype.yaml`` with the space, the native string and the probabilities.

The string is the space's own format (the NB201 arch string, the DARTS
``Genotype(...)``), so it pastes into code of that family; this module only
wraps it. Reading uses ``nas.utils.yamlio`` (a safe loader without aliases, bounded in size):
a genotype file cannot run code or exhaust memory. A genotype of a user's space
(``module:Attribute``) is read only once the config has loaded that space: the
file itself never imports a module.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..utils.atomic import atomic_write
from ..utils.errors import UserError
from .loader import is_module_spec
from .registry import SEARCH_SPACES
from .space import SearchSpace, get_space
from ..utils.yamlio import brief, read_user_yaml

GENOTYPE = "genotype.yaml"  # the file name a search writes and train_final.py reads


def genotype_record(space: SearchSpace, genotype: Any, probabilities: dict | None = None, **extra: Any) -> dict:
    """The mapping written to ``genotype.yaml``.

    Args:
        space: The search space.
        genotype: The space's genotype record.
        probabilities: group -> ``[num_edges, num_ops]`` tensor or nested list.
        extra: More top-level fields (mode, epoch, ...).
    """
    record = {"space": space.name, "genotype": space.format(genotype)}
    record.update(extra)
    if probabilities is not None:
        names = space.edge_names()
        record["probabilities"] = {
            group: {edge: {op: round(float(p), 6) for op, p in zip(space.op_names, row)}
                    for edge, row in zip(names[group], (probs.tolist() if hasattr(probs, "tolist") else probs))}
            for group, probs in probabilities.items()}
    return record


def save_genotype(path: str | Path, record: dict) -> None:
    """Writes a genotype record as YAML, atomically."""
    text = yaml.safe_dump(record, sort_keys=False, width=1000)
    atomic_write(path, lambda f: f.write(text), mode="w")


def load_genotype(path: str | Path, space: str | None = None) -> tuple[SearchSpace, Any]:
    """Reads ``genotype.yaml`` (or a bare native string in a text file).

    Args:
        path: The file.
        space: If given, the space the genotype must belong to.

    Returns:
        ``(space, genotype)``.

    Raises:
        UserError: for a missing file, bad YAML, an unknown space, a genotype of
            another space than ``space``, or a malformed genotype string.
    """
    path = Path(path)
    data = read_user_yaml(path, "genotype file", missing="pass RUN_DIR/genotype.yaml of a search")
    if isinstance(data, str):  # a bare arch string: the space must be given
        if space is None:
            raise UserError(f"{str(path)!r} holds a bare genotype string; name its space or use genotype.yaml")
        data = {"space": space, "genotype": data}
    if not isinstance(data, dict) or "space" not in data or "genotype" not in data:
        raise UserError(f"{str(path)!r} is not a genotype file: it needs 'space' and 'genotype' keys")
    if space is not None and data["space"] != space:
        raise UserError(f"{str(path)!r} holds a genotype of space {brief(data['space'])}, not {space!r}")
    if not isinstance(data["space"], str) or len(data["space"]) > 64:
        raise UserError(f"{str(path)!r}: 'space' must be the name of a search space, got {brief(data['space'])}")
    if is_module_spec(data["space"]) and data["space"] not in SEARCH_SPACES:
        # A file never imports code: the space of a user's module is loaded by the config that names it.
        raise UserError(f"{str(path)!r} holds a genotype of the space {data['space']!r}, which is not loaded; "
                        f"name it in the config (model.space={data['space']}) to load its module")
    found = get_space(data["space"])
    return found, found.parse(str(data["genotype"]))
