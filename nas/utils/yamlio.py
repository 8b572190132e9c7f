"""Reading YAML the user hands us: plain data only, bounded in size, no aliases, no duplicate keys.

Every YAML file or override the project reads goes through ``load_yaml``:

* a ``SafeLoader`` (builds dicts, lists and scalars; runs no code);
* aliases (``*name``) are refused: nested aliases expand exponentially (a few
  hundred bytes can ask for gigabytes), and no config or genotype needs them;
* a key given twice in one mapping is refused (YAML's "last one wins" would
  silently drop a value);
* input longer than ``MAX_YAML_BYTES`` is refused before parsing;
* ``3e-4`` reads as a float (YAML 1.1 wants ``3.0e-4``).

``brief`` shortens any value echoed in an error message; ``flatten`` gives a
nested mapping (a config as YAML holds it) dotted keys.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode

from .errors import UserError

MAX_YAML_BYTES = 1 << 20   # 1 MiB: configs and genotype files are a few kB
BRIEF_CHARS = 80


def brief(value: Any, limit: int = BRIEF_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters (plus ``...``), for error messages."""
    if isinstance(value, (list, tuple, dict, set)) and len(value) > limit:
        text = repr(type(value)(list(value)[:limit]) if not isinstance(value, dict)
                    else dict(list(value.items())[:limit]))  # never format a huge container whole
    else:
        text = repr(value) if not isinstance(value, str) else repr(value[:limit + 1])
    return text if len(text) <= limit else text[:limit] + "..."


class YAMLRefused(yaml.YAMLError):
    """A YAML document that parses but is refused (alias, duplicate key)."""

    def __init__(self, problem: str, mark=None):
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without aliases and duplicate keys, reading ``3e-4`` as a float."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise YAMLRefused(f"alias *{event.anchor} is not allowed (write the value out)", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: MappingNode, deep: bool = False):
        if isinstance(node, MappingNode):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the base class reports it
                    break
                if duplicate:
                    raise YAMLRefused(f"key {brief(key)} is given twice in one mapping", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def flatten(d: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: a nested mapping with dotted keys."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def load_yaml(text: str) -> Any:
    """Parses one YAML document with ``StrictLoader``.

    Raises:
        yaml.YAMLError: bad syntax, an alias, a duplicate key (``YAMLRefused``),
            or text longer than ``MAX_YAML_BYTES`` (``YAMLRefused``).
    """
    if len(text) > MAX_YAML_BYTES:
        raise YAMLRefused(f"it is {len(text):,} characters long, more than the {MAX_YAML_BYTES:,} allowed")
    return yaml.load(text, Loader=StrictLoader)  # a SafeLoader: builds plain data only, runs no code


def describe_yaml_error(e: yaml.YAMLError) -> str:
    """``at line L, column C: problem`` (or just the problem) of a YAML error, one short line."""
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(e, "problem", None) or "invalid YAML"
    return f"{where}: {problem[:160]}"


def read_yaml_file(path) -> Any:
    """Reads a YAML file with ``load_yaml``; ``OSError``/``UnicodeDecodeError``/``YAMLError`` propagate.

    Only the first ``MAX_YAML_BYTES + 1`` bytes are read, so a huge file costs nothing.
    """
    with open(path, encoding="utf-8") as f:
        text = f.read(MAX_YAML_BYTES + 1)
    return load_yaml(text)


def read_user_yaml(path: str | Path, what: str, missing: str | None = None) -> Any:
    """Reads a YAML file a user named, every failure as one line naming ``what`` and the file.

    Args:
        path: The file.
        what: What the file is, in words (``config file``, ``genotype file``).
        missing: The fix to name when the file does not exist; None returns None for a missing file.

    Raises:
        UserError: a missing file (with ``missing``), bad YAML (with its line), an unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        if missing is None:
            return None
        raise UserError(f"{what} {str(path)!r} does not exist; {missing}")
    try:
        return read_yaml_file(path)
    except yaml.YAMLError as e:
        raise UserError(f"cannot read {what} {str(path)!r}: YAML error{describe_yaml_error(e)}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {what} {str(path)!r}: {str(e).splitlines()[0][:160]}") from None
