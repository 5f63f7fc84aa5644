"""The documentation site (mkdocs.yml; built by CI's docs step with ``mkdocs build --strict``).

* The examples of docs/how_it_works.md run, in order, as one session, and print what the page
  says they print.
* Every public name of :mod:`gdopt` is rendered on an API page (docs/api/*.md, read through
  the ``:::`` directives as docs/hooks/api_index.py reads them), and every directive names
  an object: a name added to gdopt without a page fails here, not silently on the site.
* The docstring rewrites of docs/hooks/docstring_markup.py (doctests and literal blocks into
  fences, grouped parameters split, Sphinx roles into cross-references) on exact inputs.

The build itself (mkdocs, mkdocstrings, mkdocs-jupyter: the ``docs`` extra) is not run here.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
import sys
import types
from pathlib import Path

import gdopt

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "docs" / "hooks"))
import api_index  # noqa: E402
import docstring_markup as markup  # noqa: E402

_PYCON = re.compile(r"^```pycon\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def test_how_it_works_examples_run_and_print_what_the_page_shows():
    page = (ROOT / "docs" / "how_it_works.md").read_text(encoding="utf-8")
    blocks = _PYCON.findall(page)
    assert len(blocks) >= 8, "docs/how_it_works.md lost its examples"
    session = "\n".join(blocks)
    test = doctest.DocTestParser().get_doctest(session, {}, "how_it_works", "how_it_works.md", 0)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    report: list[str] = []
    runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
    assert runner.tries == len(test.examples) > 30


def test_every_public_name_of_gdopt_is_rendered_on_an_api_page():
    by_id = api_index.rendered()
    directives = [d.identifier for d in api_index.directives()]
    missing = []
    for name in sorted(n for n in dir(gdopt) if not n.startswith("_")):
        obj = getattr(gdopt, name)
        if not isinstance(obj, types.ModuleType) and id(obj) not in by_id:
            missing.append(f"gdopt.{name}")
    # every public module, whether or not something imported it yet (dir(gdopt) lists a
    # submodule only once imported); a package of data files only (gdopt.datasets) has no page
    for info in pkgutil.walk_packages(gdopt.__path__, "gdopt."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        module = importlib.import_module(info.name)
        public = [
            n
            for n, v in vars(module).items()
            if not n.startswith("_") and not isinstance(v, types.ModuleType) and n != "annotations"
        ]
        covered = any(d == info.name or d.startswith(info.name + ".") for d in directives)
        if public and not covered:
            missing.append(f"module {info.name}")
    assert not missing, (
        "public names that no docs/api/*.md page renders (add the module or the name as a "
        f"'::: identifier' directive): {missing}"
    )


def test_every_api_directive_names_an_object_and_renders_it_once():
    seen: dict[str, str] = {}
    for d in api_index.directives():
        assert d.identifier not in seen, f"{d.identifier} on {seen[d.identifier]} and {d.page}"
        seen[d.identifier] = d.page
        obj = api_index.resolve(d.identifier)
        if isinstance(obj, types.ModuleType) and d.members:
            assert hasattr(obj, "__all__"), f"{d.page}: {d.identifier} has no __all__"
    assert len(seen) > 40
    # the pages that mkdocs.yml's nav lists are the pages there are (nav is also checked by
    # the strict build; this says which one is missing before a build)
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in sorted((ROOT / "docs" / "api").glob("*.md")):
        assert f"api/{page.name}" in nav, f"mkdocs.yml's nav lacks api/{page.name}"
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"notebooks/{notebook.name}" in nav, f"mkdocs.yml's nav lacks {notebook.name}"


def test_doctests_and_literal_blocks_become_fences():
    text = (
        "Update rule (``t`` from 1)::\n"
        "\n"
        "    m = b m + g\n"
        "      p = p - m\n"
        "\n"
        "Then:\n"
        ">>> x = 1  # doctest: +SKIP\n"
        ">>> x\n"
        "1\n"
        "\n"
        "End ::\n"
        "\n"
        "  a\n"
        "```\n"
        ">>> inside a fence\n"
        "```"
    )
    assert markup.fence_doctests_and_literals(text) == (
        "Update rule (``t`` from 1):\n"
        "\n"
        "```text\n"
        "m = b m + g\n"
        "  p = p - m\n"
        "```\n"
        "\n"
        "Then:\n"
        "```pycon\n"
        ">>> x = 1\n"
        ">>> x\n"
        "1\n"
        "```\n"
        "\n"
        "End\n"
        "\n"
        "```text\n"
        "a\n"
        "```\n"
        "```\n"
        ">>> inside a fence\n"
        "```"
    )


def test_grouped_parameters_become_one_entry_per_name():
    text = (
        "Args:\n"
        "  lr: the rate.\n"
        "  b1, b2 (float): decays,\n"
        "    in [0, 1).\n"
        "  eps: stability.\n"
        "\n"
        "a, b: not in a section.\n"
        "Returns:\n"
        "  x, y: a pair."
    )
    assert markup.split_grouped_parameters(text) == (
        "Args:\n"
        "  lr: the rate.\n"
        "  b1 (float): decays,\n"
        "    in [0, 1).\n"
        "  b2 (float): decays,\n"
        "    in [0, 1).\n"
        "  eps: stability.\n"
        "\n"
        "a, b: not in a section.\n"
        "Returns:\n"
        "  x, y: a pair."
    )


def test_sphinx_roles_link_to_the_rendered_object_or_become_code():
    link = markup.Linker()
    scopes = ["gdopt.tuning", "gdopt", ""]
    text = (
        ":func:`fit`, :func:`~gdopt.engine.core.make_train_fn`, :class:`SweepResult`, "
        ":mod:`gdopt.landscape`, :attr:`gdopt.FitResult.params`, :func:`jax.grad`, "
        ":func:`nothing_here`()"
    )
    assert link(text, scopes) == (
        "[`fit`][gdopt.engine.fit.fit], [`make_train_fn`][gdopt.engine.core.make_train_fn], "
        "[`SweepResult`][gdopt.tuning.SweepResult], [`gdopt.landscape`][gdopt.landscape], "
        "[`gdopt.FitResult.params`][gdopt.engine.fit.FitResult.params], `jax.grad`, "
        "`nothing_here`()"
    )
    assert link("```\n:func:`fit`\n```", scopes) == "```\n:func:`fit`\n```"
    # a function named like a module beside it: gdopt.multistart (and gdopt.engine.fit)
    assert link(":func:`multistart`, :mod:`gdopt.multistart`", ["gdopt", ""]) == (
        "[`multistart`][gdopt.multistart.multistart], [`gdopt.multistart`][gdopt.multistart]"
    )
    assert link(":func:`fit`", ["gdopt.engine", "gdopt"]) == "[`fit`][gdopt.engine.fit.fit]"
