"""gdopt's docstrings (Google sections, reST markup) rewritten as Markdown for mkdocstrings.

gdopt's docstrings are written for ``help()`` and doctest: Google-style ``Args:`` /
``Returns:`` sections, with reST's literal blocks (``Update rule::``), Sphinx roles
(``:func:`fit```) and bare doctest examples. Outside fenced code, these functions rewrite:

* a doctest (a ``>>>`` line and what follows up to a blank line) into a ``pycon`` fence,
  without its ``# doctest:`` directives;
* a reST literal block (a paragraph ending in ``::``, then an indented block) into a fence;
* a grouped parameter entry (``b1, b2: β1, β2 in [0, 1).``) into one entry per name, each
  with the same description, so griffe still checks every name against the signature;
* a Sphinx role into a cross-reference to the object where the API pages render it
  (``api_index.rendered``), or into code when no page renders it (``jax.grad``).

``griffe_markup.py`` applies them to every docstring of the package; ``tests/test_docs.py``
tests them. Only the standard library and ``api_index`` are needed here.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import api_index  # noqa: E402

_ROLE = re.compile(
    r":(?:py:)?(func|class|mod|data|attr|meth|obj|exc|const):`(~?)([^`<>]+?)(\(\))?`"
)
_SECTION = re.compile(
    r"^(\s*)(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|"
    r"Other Parameters|Attributes):\s*$"
)
_GROUPED = re.compile(r"^(\s*)(\**\w+(?:\s*,\s*\**\w+)+)(\s*\([^)]*\))?:(\s.*|)$")
_DOCTEST_FLAGS = re.compile(r"\s*#\s*doctest:.*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def fence_doctests_and_literals(text: str) -> str:
    """Doctests into ``pycon`` fences and reST literal blocks into plain fences."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    in_fence = False
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith("```"):
            in_fence = not in_fence
            out.append(line)
            i += 1
            continue
        if in_fence:
            out.append(line)
            i += 1
            continue
        if stripped.startswith(">>>"):
            pad = " " * _indent(line)
            out.append(f"{pad}```pycon")
            while i < len(lines) and lines[i].strip():
                out.append(_DOCTEST_FLAGS.sub("", lines[i]))
                i += 1
            out.append(f"{pad}```")
            continue
        if stripped.endswith("::") and not stripped.startswith(".."):
            base = _indent(line)
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and _indent(lines[j]) > base:
                block_indent = _indent(lines[j])
                end = j
                while end < len(lines) and (
                    not lines[end].strip() or _indent(lines[end]) >= block_indent
                ):
                    end += 1
                while end > j and not lines[end - 1].strip():
                    end -= 1
                head = line.rstrip()[:-2]  # reST: "text::" is "text:", "text ::" is "text"
                if head.strip():
                    out.append(head.rstrip() if head.endswith(" ") else f"{head}:")
                    out.append("")
                pad = " " * base
                out.append(f"{pad}```text")
                out.extend(pad + ln[block_indent:] if ln.strip() else "" for ln in lines[j:end])
                out.append(f"{pad}```")
                i = end
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


def split_grouped_parameters(text: str) -> str:
    """``a, b: description`` entries of parameter/attribute sections, one entry per name."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        header = _SECTION.match(line)
        if not header:
            continue
        section_indent = len(header.group(1))
        item_indent = None
        while i < len(lines):
            line = lines[i]
            if line.strip() and _indent(line) <= section_indent:
                break
            if line.strip() and item_indent is None:
                item_indent = _indent(line)
            grouped = _GROUPED.match(line) if line.strip() else None
            if not (grouped and _indent(line) == item_indent):
                out.append(line)
                i += 1
                continue
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > item_indent):
                j += 1
            while j > i + 1 and not lines[j - 1].strip():
                j -= 1
            pad, names, kind, rest = grouped.groups()
            for name in re.split(r"\s*,\s*", names):
                out.append(f"{pad}{name}{kind or ''}:{rest}")
                out.extend(lines[i + 1 : j])
            i = j
    return "\n".join(out)


class Linker:
    """Sphinx roles into cross-references to rendered objects (code where none is)."""

    def __init__(self) -> None:
        self.by_id = api_index.rendered()
        self.modules = api_index.rendered_modules()

    def target(self, name: str, scopes: list[str], kind: str = "obj") -> str | None:
        """Where the object ``name`` (looked up in each scope in turn) is rendered."""
        for scope in scopes:
            identifier = f"{scope}.{name}" if scope else name
            try:
                obj = api_index.resolve(identifier)
            except (ImportError, AttributeError):
                continue
            if isinstance(obj, types.ModuleType) and kind != "mod":
                # gdopt.engine.fit is a module and gdopt.engine's attribute fit a function
                owner, _, member = identifier.rpartition(".")
                try:
                    obj = getattr(api_index.resolve(owner), member) if owner else obj
                except (ImportError, AttributeError):
                    pass
            if isinstance(obj, types.ModuleType):
                return identifier if identifier in self.modules else None
            if id(obj) in self.by_id:
                return self.by_id[id(obj)]
            owner, _, member = identifier.rpartition(".")
            try:
                parent = api_index.resolve(owner)
            except (ImportError, AttributeError):
                return None
            if isinstance(parent, type) and id(parent) in self.by_id and member in vars(parent):
                return f"{self.by_id[id(parent)]}.{member}"
            return None
        return None

    def __call__(self, text: str, scopes: list[str]) -> str:
        def replace(match: re.Match[str]) -> str:
            kind, short, name, call = match.groups()
            shown = name.rpartition(".")[2] if short else name
            shown += call or ""
            found = self.target(name, scopes, kind)
            return f"[`{shown}`][{found}]" if found else f"`{shown}`"

        out, in_fence = [], False
        for line in text.split("\n"):
            if line.lstrip().startswith("```"):
                in_fence = not in_fence
            out.append(line if in_fence else _ROLE.sub(replace, line))
        return "\n".join(out)


def rewrite(text: str, linker: Linker, scopes: list[str]) -> str:
    """All the rewrites, in order (a role inside a fence stays as written)."""
    return linker(split_grouped_parameters(fence_doctests_and_literals(text)), scopes)
