"""mkdocs hooks: the executed notebooks as pages, and the tables of the namespace modules.

* ``notebooks/*.ipynb`` (outside ``docs/``, committed executed) become the pages
  ``notebooks/<name>/``; mkdocs-jupyter renders them without running them. Nothing is copied
  into ``docs/``.
* A line ``<!-- names: gdopt.contrib -->`` in a page becomes a table of that module's
  ``__all__``, each name linked to where its object is rendered; a name that no page renders
  is a build warning (so ``mkdocs build --strict`` fails).
* Each API page is checked to render what ``api_index`` says it renders (every directive's
  object, and every name of a module directive's ``__all__``): ``tests/test_docs.py`` checks
  completeness through ``api_index``, and this check keeps the two in step.

Configured in mkdocs.yml under ``hooks``.
"""

from __future__ import annotations

import logging
import re
import sys
import types
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

sys.path.insert(0, str(Path(__file__).resolve().parent))
import api_index  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
_NAMES = re.compile(r"^<!-- names: ([\w.]+) -->$", re.MULTILINE)
log = logging.getLogger("mkdocs.hooks.site_hooks")


@event_priority(100)  # before mkdocs-jupyter's on_files, which turns .ipynb files into pages
def on_files(files: Files, config: Any) -> Files:
    # a File whose source directory is the repository root: src_uri notebooks/<name>.ipynb,
    # read in place (mkdocs-jupyter's wrapper needs src_dir, which File.generated leaves unset)
    for notebook in sorted(NOTEBOOKS.glob("*.ipynb")):
        files.append(
            File(
                f"notebooks/{notebook.name}",
                src_dir=str(NOTEBOOKS.parent),
                dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"],
            )
        )
    return files


def _first_line(obj: Any) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.split("\n\n")[0].replace("\n", " ").replace("|", "\\|")


def _table(module_name: str, page: str) -> str:
    module = api_index.resolve(module_name)
    by_id = api_index.rendered()
    rows = ["| name | is | summary |", "| --- | --- | --- |"]
    for name in module.__all__:
        obj = getattr(module, name)
        where = by_id.get(id(obj))
        if where is None:
            log.warning("%s: %s.%s is rendered on no API page", page, module_name, name)
            continue
        summary = _first_line(obj)
        summary = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", summary)
        rows.append(f"| `{name}` | [`{where}`][{where}] | {summary} |")
    return "\n".join(rows)


def on_page_content(html: str, page: Any, **kwargs: Any) -> str:
    anchors = set(re.findall(r'id="([\w.]+)"', html))
    for d in api_index.directives():
        if f"api/{d.page}" != page.file.src_uri:
            continue
        expected = [d.identifier]
        obj = api_index.resolve(d.identifier)
        if d.members and isinstance(obj, types.ModuleType):
            expected += [f"{d.identifier}.{name}" for name in obj.__all__]
        for identifier in expected:
            if identifier not in anchors:
                log.warning("%s: %s is not rendered", page.file.src_uri, identifier)
    return html


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    return _NAMES.sub(lambda m: _table(m.group(1), page.file.src_uri), markdown)
