"""A name -> object registry that refuses duplicate names (as fvcore's).

Search spaces (``nas.spaces.registry``) and estimators of the logit gradient
(``nas.sampling.estimators``) register themselves in one; the library looks them
up by name and never imports a particular one.
"""
from __future__ import annotations

import difflib
from typing import Any, Iterator

from .errors import UserError


class Registry:
    """Maps names to registered objects.

    Args:
        kind: What the registry holds, used in messages ("search space").
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def register(self, name: str, obj: Any = None) -> Any:
        """Registers ``obj`` under ``name``; usable as a decorator when ``obj`` is None.

        Raises:
            KeyError: if ``name`` is already registered.
        """
        if obj is None:
            def decorator(o: Any) -> Any:
                self.register(name, o)
                return o
            return decorator
        if name in self._entries:
            raise KeyError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj
        return obj

    def get(self, name: str) -> Any:
        """Returns the object registered as ``name``.

        Raises:
            UserError: naming the closest registered name when ``name`` is unknown.
        """
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"unknown {self.kind} {name!r}{hint}; choose from {', '.join(sorted(self._entries))}")
        return self._entries[name]

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

