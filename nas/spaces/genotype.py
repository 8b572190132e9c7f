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


def load_genotype(path: str | Path, space: str | None = None,
                  bare_space: str | None = None) -> tuple[SearchSpace, Any]:
    """Reads ``genotype.yaml`` (or a bare native string in a text file).

    Args:
        path: The file.
        space: If given, the space the genotype must belong to.
        bare_space: The space of a bare string (when ``space`` is not given); a record names its own.

    Returns:
        ``(space, genotype)``.

    Raises:
        UserError: for a missing file, bad YAML, an unknown space, a genotype of
            another space than ``space``, or a malformed genotype string.
    """
    path = Path(path)
    data = read_user_yaml(path, "genotype file", missing="pass RUN_DIR/genotype.yaml of a search")
    if isinstance(data, str):  # a bare arch string: the space must be given
        if (space or bare_space) is None:
            raise UserError(f"{str(path)!r} holds a bare genotype string; name its space or use genotype.yaml")
        data = {"space": space or bare_space, "genotype": data}
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


def published_names() -> dict[str, str]:
    """Published genotype name -> the space that holds it, over every registered space."""
    from .registry import SEARCH_SPACES

    return {name: space for space in SEARCH_SPACES.names() for name in get_space(space).published}


def resolve_genotype(text: str, space: str | None = None) -> tuple[SearchSpace, Any, Path | None]:
    """What a ``--genotype`` argument names, tried in this order.

    1. a run directory of a search (its ``genotype.yaml``);
    2. a genotype file (``genotype.yaml``, or a text file holding a native string of ``space``);
    3. a published genotype of any registered space (``DARTS_V2``, ``GDAS_V1``, ...);
    4. a native genotype string of ``space`` (an NB201 arch string, a ``Genotype(...)``, ...).

    Args:
        text: The argument.
        space: The configured space (``model.space``): the one a bare string belongs to.

    Returns:
        ``(space, genotype, file)`` with ``file`` the genotype file read, None for a name or a string.
        The space may differ from ``space`` (a published name or file of another space): the
        caller compares it with its config.

    Raises:
        UserError: naming the four forms and the published names when ``text`` is none of them.
    """
    text = str(text)
    path = Path(text)
    try:  # a long genotype string is no file name (ENAMETOOLONG)
        kind = "dir" if path.is_dir() else "file" if path.is_file() else None
    except (OSError, ValueError):
        kind = None
    if kind == "dir":
        found = path / GENOTYPE
        if not found.is_file():
            raise UserError(f"--genotype {text!r} is a directory without {GENOTYPE}; pass the run directory of "
                            "a search that finished an epoch (or its genotype.yaml)")
        return (*load_genotype(found, None), found)
    if kind == "file":
        return (*load_genotype(path, bare_space=space), path)
    names = published_names()
    if text in names:
        owner = get_space(names[text])
        return owner, owner.published[text], None
    listed = ", ".join(f"{name} ({owner})" for name, owner in names.items()) or "none registered"
    looks_like_path = "/" in text or text.endswith((".yaml", ".yml", ".txt"))
    looks_like_name = text.replace("_", "").replace("-", "").isalnum()
    if space is None or looks_like_name or looks_like_path:
        where = f"a genotype string of the {space} space" if space else "a genotype string"
        missing = " (no file or directory of that name exists)" if looks_like_path else ""
        raise UserError(f"--genotype {brief(text)} is not a run directory, a genotype file{missing}, a published "
                        f"name ({listed}) or {where}; pass one of them")
    found = get_space(space)
    return found, found.parse(text), None  # a UserError naming the string's expected form if malformed
