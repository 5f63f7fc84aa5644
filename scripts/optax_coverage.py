"""Write ``docs/optax_coverage.md``: which optax names gdopt has, and where.

Every public optimizer, transformation, schedule, combinator / wrapper, line search,
projection and utility of ``optax`` and ``optax.contrib`` (losses, state classes, types and
submodules are left out) is listed with the gdopt function of the same name, found by
introspecting both packages. optax's projections (``optax.projections.projection_*``, functions
of a pytree) are matched with gdopt's ``project_*`` functions; gdopt's ``projection_*`` are the
transformation forms. A few optax names whose gdopt equivalent has another name are in
``ALIASES``.

optax is imported only by this script (and by the tests); gdopt never imports it.

Usage::

    python scripts/optax_coverage.py            # rewrites docs/optax_coverage.md
    python scripts/optax_coverage.py --check    # exits 1 if the file is out of date
"""

from __future__ import annotations

import argparse
import inspect
import sys
import types
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "docs" / "optax_coverage.md"

# category -> its section heading
CATEGORIES = {
    "optimizer": "Optimizers",
    "transformation": "Transformations",
    "line search": "Line searches",
    "schedule": "Schedules",
    "combinator / wrapper": "Combinators and wrappers",
    "projection": "Projections",
    "utility": "Utilities",
}

# optax name -> gdopt's equivalent under another name ("module.name" inside gdopt).
ALIASES = {
    "global_norm": "tree.tree_l2_norm",
    "safe_int32_increment": "safe_increment",
}

# optax.contrib names that are optimizers (the others are transformations or wrappers).
_CONTRIB_OPTIMIZERS = {
    "acprop",
    "ademamix",
    "adopt",
    "cocob",
    "dadapt_adamw",
    "dog",
    "dowg",
    "dpsgd",
    "galore",
    "madgrad",
    "momo",
    "momo_adam",
    "muon",
    "prodigy",
    "schedule_free_adamw",
    "schedule_free_sgd",
    "simplified_ademamix",
    "sophia",
}
_CONTRIB_WRAPPERS = {"mechanize", "sam", "schedule_free", "split_real_and_imaginary"}
_CONTRIB_UTILITIES = {"schedule_free_eval_params"}

# optax module (where a function is defined) -> category.
_BY_MODULE = {
    "optax._src.alias": "optimizer",
    "optax._src.transform": "transformation",
    "optax._src.factorized": "transformation",
    "optax.transforms._accumulation": "transformation",
    "optax.transforms._adding": "transformation",
    "optax.transforms._clipping": "transformation",
    "optax.transforms._constraining": "transformation",
    "optax._src.linesearch": "line search",
    "optax.schedules._schedule": "schedule",
    "optax.schedules._join": "schedule",
    "optax.schedules._inject": "combinator / wrapper",
    "optax.transforms._combining": "combinator / wrapper",
    "optax.transforms._masking": "combinator / wrapper",
    "optax.transforms._freezing": "combinator / wrapper",
    "optax.transforms._conditionality": "combinator / wrapper",
    "optax.transforms._layouts": "combinator / wrapper",
    "optax.transforms._monitoring": "combinator / wrapper",
    "optax._src.lookahead": "combinator / wrapper",
    "optax.microbatching._microbatching": "combinator / wrapper",
    "optax._src.base": "utility",
    "optax._src.update": "utility",
    "optax._src.numerics": "utility",
    "optax._src.linear_algebra": "utility",
    "optax._src.utils": "utility",
    "optax.tree_utils._tree_math": "utility",
    "optax.tree_utils._state_utils": "utility",
}
_SKIPPED_MODULE_PREFIXES = ("optax.losses",)
# Skip functions of optax.transforms._accumulation that are predicates for MultiSteps.
_SKIP_FN_CATEGORY = {"skip_large_updates": "utility", "skip_not_finite": "utility"}


def _category(where: str, name: str, obj: Any) -> str | None:
    """The category of an optax public name, or None to leave it out."""
    if isinstance(obj, types.ModuleType) or not callable(obj):
        return None
    if inspect.isclass(obj):
        # NamedTuple states, protocols and types are not API to port; MultiSteps is a wrapper
        return "combinator / wrapper" if name == "MultiSteps" else None
    if where == "optax.projections":
        return "projection"
    if where == "optax.contrib":
        if name in _CONTRIB_OPTIMIZERS:
            return "optimizer"
        if name in _CONTRIB_WRAPPERS:
            return "combinator / wrapper"
        if name in _CONTRIB_UTILITIES:
            return "utility"
        return "transformation"
    if name in _SKIP_FN_CATEGORY:
        return _SKIP_FN_CATEGORY[name]
    module = getattr(obj, "__module__", "") or ""
    if module.startswith(_SKIPPED_MODULE_PREFIXES):
        return None
    if module == "functools":  # nadam / nadamw are partials of adam / adamw
        return "optimizer"
    return _BY_MODULE.get(module, "utility" if module.startswith("optax") else None)


def optax_names() -> list[tuple[str, str, str]]:
    """``(where, name, category)`` for every public optax API name, sorted."""
    import optax
    import optax.contrib
    import optax.projections

    out = []
    for where, module in (
        ("optax", optax),
        ("optax.contrib", optax.contrib),
        ("optax.projections", optax.projections),
    ):
        for name in sorted(dir(module)):
            if name.startswith("_"):
                continue
            category = _category(where, name, getattr(module, name))
            if category is not None:
                out.append((where, name, category))
    return out


def _resolve(path: str) -> Any:
    import gdopt

    obj: Any = gdopt
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _source_module(obj: Any) -> str:
    return getattr(obj, "__module__", "") or ""


def gdopt_match(where: str, name: str) -> list[tuple[str, str]]:
    """gdopt's counterparts of optax's ``where.name``: ``[(public path, defining module)]``."""
    if where == "optax.projections":
        suffix = name[len("projection_") :]
        candidates = [f"project_{suffix}", name]
    else:
        candidates = [name]
        if name in ALIASES:
            candidates = [ALIASES[name]]
    found = []
    for path in candidates:
        obj = _resolve(path)
        if obj is not None and callable(obj) and not isinstance(obj, types.ModuleType):
            found.append((f"gdopt.{path}", _source_module(obj)))
    return found


def _gdopt_only() -> list[tuple[str, str]]:
    """Public gdopt optimizers, transforms, schedules and wrappers that optax lacks."""
    import optax
    import optax.contrib
    import optax.projections

    import gdopt

    modules = (
        gdopt.optimizers,
        gdopt.transforms,
        gdopt.schedules,
        gdopt.combinators,
        gdopt.wrappers,
        gdopt.linesearch,
    )
    projections = set(dir(optax.projections))
    projections |= {n.replace("projection_", "project_") for n in projections}
    out = set()
    for module in modules:
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or not callable(obj):
                continue
            if hasattr(optax, name) or hasattr(optax.contrib, name) or name in projections:
                continue
            out.add((f"gdopt.{name}", _source_module(obj)))
    return sorted(out)


def render() -> str:
    """The Markdown text of the coverage report."""
    import optax

    import gdopt

    rows = [(w, n, c, gdopt_match(w, n)) for w, n, c in optax_names()]
    lines = [
        "# optax coverage",
        "",
        "<!-- Generated by scripts/optax_coverage.py; do not edit by hand. -->",
        "",
        f"Which public names of optax {optax.__version__} (`optax`, `optax.contrib`, "
        f"`optax.projections`) gdopt {gdopt.__version__} has, found by introspecting both "
        "packages. Losses, state classes, types and submodules are not listed. A name counts "
        "as covered when gdopt has a public function of that name (for optax's projections: "
        "gdopt's `project_*` function of a pytree; gdopt's `projection_*` are the "
        "transformation forms). Argument names and defaults of the covered names are checked "
        "against optax by `tests/test_api_consistency.py`.",
        "",
        "## Summary",
        "",
        "| category | optax names | in gdopt | missing |",
        "| --- | ---: | ---: | ---: |",
    ]
    total = covered = 0
    for cat in CATEGORIES:
        in_cat = [r for r in rows if r[2] == cat]
        have = sum(1 for r in in_cat if r[3])
        total += len(in_cat)
        covered += have
        lines.append(f"| {cat} | {len(in_cat)} | {have} | {len(in_cat) - have} |")
    lines.append(f"| **all** | **{total}** | **{covered}** | **{total - covered}** |")
    lines.append("")
    for cat, heading in CATEGORIES.items():
        in_cat = [r for r in rows if r[2] == cat]
        have = sum(1 for r in in_cat if r[3])
        lines += [
            f"## {heading} ({have} of {len(in_cat)})",
            "",
            "| optax | gdopt | defined in |",
            "| --- | --- | --- |",
        ]
        for where, name, _, match in in_cat:
            if match:
                paths = ", ".join(f"`{p}`" for p, _ in match)
                modules = ", ".join(sorted({f"`{m}`" for _, m in match}))
            else:
                paths, modules = "—", ""
            lines.append(f"| `{where}.{name}` | {paths} | {modules} |")
        lines.append("")
    only = _gdopt_only()
    lines += [
        f"## In gdopt, not in optax ({len(only)})",
        "",
        "Optimizers, transformations, schedules, combinators, wrappers and line-search "
        "helpers of gdopt with no optax function of the same name.",
        "",
        "| gdopt | defined in |",
        "| --- | --- |",
    ]
    lines += [f"| `{p}` | `{m}` |" for p, m in only]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUT.read_text() if OUT.exists() else ""
        if current != text:
            print(f"{OUT} is out of date: run python scripts/optax_coverage.py", file=sys.stderr)
            return 1
        print(f"{OUT} is up to date.")
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
