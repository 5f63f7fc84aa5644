"""Which object each API page renders, read from the ``::: identifier`` directives of docs/api.

One source of truth for three users: ``docstring_markup.py`` (through the griffe extension
``griffe_markup.py``) links a docstring's Sphinx roles to the rendered object, the mkdocs
hook ``site_hooks.py`` writes the tables of the namespace modules, and ``tests/test_docs.py``
checks that every public name of :mod:`gdopt` is rendered somewhere.

A directive renders its object; a module directive renders the names of the module's
``__all__`` as ``<module>.<name>``, unless its options say ``members: false`` (the namespace
modules, ``gdopt.contrib`` for example, whose names are rendered where they are defined).
"""

from __future__ import annotations

import importlib
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

API_DIR = Path(__file__).resolve().parents[1] / "api"
_DIRECTIVE = re.compile(r"^::: *([\w.]+) *$")
_NO_MEMBERS = re.compile(r"^\s+members:\s*(false|\[\s*\])\s*$")


@dataclass(frozen=True)
class Directive:
    """One ``::: identifier`` of an API page and whether it renders the module's members."""

    page: str
    identifier: str
    members: bool


def directives(api_dir: Path = API_DIR) -> list[Directive]:
    """Every ``:::`` directive of ``api_dir/*.md``, in page and line order."""
    out = []
    for path in sorted(api_dir.glob("*.md")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            match = _DIRECTIVE.match(line)
            if not match:
                continue
            members = True
            for option in lines[i + 1 :]:
                if option and not option.startswith(" "):
                    break
                if _NO_MEMBERS.match(option):
                    members = False
            out.append(Directive(path.name, match.group(1), members))
    return out


def resolve(identifier: str) -> Any:
    """The Python object a dotted identifier names (its longest importable prefix, then
    attributes); ``AttributeError``/``ImportError`` when it names nothing."""
    parts = identifier.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(f"no module in {identifier!r}")


def rendered(api_dir: Path = API_DIR) -> dict[int, str]:
    """``id(object) -> identifier`` of its first rendering, for every rendered object."""
    out: dict[int, str] = {}
    for d in directives(api_dir):
        obj = resolve(d.identifier)
        out.setdefault(id(obj), d.identifier)
        if isinstance(obj, types.ModuleType) and d.members:
            for name in getattr(obj, "__all__", ()):
                out.setdefault(id(getattr(obj, name)), f"{d.identifier}.{name}")
    return out


def rendered_modules(api_dir: Path = API_DIR) -> set[str]:
    """The modules that have a directive of their own."""
    return {
        d.identifier
        for d in directives(api_dir)
        if isinstance(resolve(d.identifier), types.ModuleType)
    }
