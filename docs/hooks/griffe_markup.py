"""A griffe extension: the docstrings of the ``gdopt`` package, rewritten by docstring_markup.py.

Configured in mkdocs.yml under the python handler's ``extensions``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import griffe

sys.path.insert(0, str(Path(__file__).resolve().parent))
import docstring_markup as markup  # noqa: E402


def _scopes(obj: griffe.Object) -> list[str]:
    scopes = []
    parent: Any = obj if (obj.is_class or obj.is_module) else obj.parent
    while parent is not None:
        scopes.append(parent.path)
        parent = parent.parent
    return [*scopes, "gdopt", ""]


class GdoptMarkup(griffe.Extension):
    """Rewrite the docstrings of the ``gdopt`` package once it is loaded."""

    def __init__(self) -> None:
        self._linker: markup.Linker | None = None

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.path != "gdopt":
            return
        self._linker = self._linker or markup.Linker()
        self._walk(pkg, set())

    def _walk(self, obj: griffe.Object, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            assert self._linker is not None
            obj.docstring.value = markup.rewrite(obj.docstring.value, self._linker, _scopes(obj))
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member, seen)  # type: ignore[arg-type]
