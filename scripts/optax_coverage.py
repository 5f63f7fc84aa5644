"""Write ``docs/optax_coverage.md``: every public callable of optax, where gdopt has it.

For each of optax's public namespaces (``optax``, ``optax.tree``, ``optax.losses``,
``optax.schedules``, ``optax.transforms``, ``optax.projections``, ``optax.contrib`` and
``optax.tree_utils``) every public callable name (functions and classes; submodules are
left out) is listed with gdopt's object under the same path (``gdopt.contrib.sam`` for
``optax.contrib.sam``), found by introspecting both packages. A name gdopt lacks is listed
with the reason from ``REASONS``; :func:`unexplained` returns those that have none (the test
suite requires it to be empty).

optax is imported only by this script (and by the tests); gdopt never imports it.

Usage::

    python scripts/optax_coverage.py            # rewrites docs/optax_coverage.md
    python scripts/optax_coverage.py --check    # exits 1 if the file is out of date
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
import types
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "docs" / "optax_coverage.md"

NAMESPACES = (
    "optax",
    "optax.tree",
    "optax.losses",
    "optax.schedules",
    "optax.transforms",
    "optax.projections",
    "optax.contrib",
    "optax.tree_utils",
)

_LATER = "an optimizer gdopt does not have yet (a later issue's work)"
_STATE = "the state of a transformation gdopt lacks"
_STATELESS = (
    "gdopt's transformation of this name keeps no state of this class (its state is "
    "EmptyState or its own NamedTuple); programs read states by field, never build them"
)
_TYPE = "a typing alias or protocol, used in annotations only"

# optax name (in any namespace) -> why gdopt has no object of that name there.
REASONS: dict[str, str] = {
    # optimizers and their transforms / states
    "adan": _LATER,
    "scale_by_adan": _LATER,
    "ScaleByAdanState": _STATE,
    "optimistic_adam": _LATER,
    "optimistic_adam_v2": _LATER,
    "optimistic_gradient_descent": _LATER,
    "scale_by_optimistic_gradient": _LATER,
    "scale_by_distance_over_gradients": _LATER + " (DoG's transform)",
    "acprop": _LATER,
    "scale_by_acprop": _LATER,
    "cocob": _LATER,
    "scale_by_cocob": _LATER,
    "COCOBState": _STATE,
    "dog": _LATER,
    "DoGState": _STATE,
    "dowg": _LATER,
    "DoWGState": _STATE,
    "dpsgd": _LATER,
    "differentially_private_aggregate": _LATER + " (DP-SGD's aggregation)",
    "DifferentiallyPrivateAggregateState": _STATE,
    "galore": _LATER,
    "scale_by_galore": _LATER,
    "GaLoreState": _STATE,
    "GaLoreDimensionNumbers": _STATE,
    "madgrad": _LATER,
    "scale_by_madgrad": _LATER,
    "MadgradState": _STATE,
    "momo": _LATER,
    "momo_adam": _LATER,
    "MomoState": _STATE,
    "MomoAdamState": _STATE,
    "simplified_ademamix": _LATER,
    "scale_by_simplified_ademamix": _LATER,
    "ScaleBySimplifiedAdEMAMixState": _STATE,
    "mechanize": _LATER + " (Mechanic's wrapper)",
    "MechanicState": _STATE,
    "split_real_and_imaginary": "not implemented yet: gdopt's transforms take complex "
    "leaves directly",
    "SplitRealAndImaginaryState": _STATE,
    # states of transforms gdopt has, kept as EmptyState or another class
    "AdaptiveGradClipState": _STATELESS,
    "AddDecayedWeightsState": _STATELESS,
    "ClipByGlobalNormState": _STATELESS,
    "ClipState": _STATELESS,
    "NonNegativeParamsState": _STATELESS,
    "ScaleByRStdDevState": _STATELESS,
    "ScaleByTrustRatioState": _STATELESS,
    "MultiTransformState": "gdopt's multi_transform/partition state is PartitionState "
    "(optax's alias of the same layout)",
    # deliberate differences
    "LookaheadParams": "deliberate: gdopt.lookahead keeps the slow weights in its state, so "
    "params and gradients are plain pytrees (docs/migration.md)",
    # types
    "MaskOrFn": _TYPE,
    "MaskedNode": "optax's placeholder for masked-out leaves: gdopt's masked and "
    "partition use None",
    "ShouldSkipUpdateFunction": _TYPE,
    "TransformUpdateExtraArgsFn": _TYPE,
    "ConditionFn": _TYPE,
}


def _public_callables(module: types.ModuleType) -> list[str]:
    out = []
    for name in sorted(dir(module)):
        if name.startswith("_"):
            continue
        obj = getattr(module, name)
        if isinstance(obj, types.ModuleType) or not callable(obj):
            continue
        out.append(name)
    return out


def _kind(obj: Any) -> str:
    if inspect.isclass(obj):
        return "state" if hasattr(obj, "_fields") else "class / type"
    module = getattr(obj, "__module__", "") or ""
    if ".losses" in module:
        return "loss"
    if "tree_utils" in module:
        return "tree utility"
    if "schedules" in module:
        return "schedule"
    if "projections" in module:
        return "projection"
    return "function"


def rows() -> list[tuple[str, str, str, str | None]]:
    """``(namespace, name, kind, gdopt path or None)`` for every optax public callable."""
    import gdopt

    out = []
    for ns in NAMESPACES:
        module = importlib.import_module(ns)
        ours = gdopt
        for part in ns.split(".")[1:]:
            ours = getattr(ours, part, None)
        for name in _public_callables(module):
            obj = getattr(module, name)
            found = ours is not None and getattr(ours, name, None) is not None
            path = "gdopt" + ns[len("optax") :] + "." + name if found else None
            out.append((ns, name, _kind(obj), path))
    return out


def unexplained() -> list[str]:
    """optax names gdopt lacks that have no entry in ``REASONS``."""
    return [f"{ns}.{name}" for ns, name, _, path in rows() if path is None and name not in REASONS]


def stale_reasons() -> list[str]:
    """``REASONS`` entries for names gdopt now has everywhere optax has them."""
    missing = {name for _, name, _, path in rows() if path is None}
    return sorted(n for n in REASONS if n not in missing)


def render() -> str:
    """The Markdown text of the coverage report."""
    import optax

    import gdopt

    table = rows()
    lines = [
        "# optax coverage",
        "",
        "<!-- Generated by scripts/optax_coverage.py; do not edit by hand. -->",
        "",
        f"Every public callable name (functions and classes) of optax {optax.__version__}'s "
        "namespaces and where gdopt "
        f"{gdopt.__version__} has it: under the same path (`optax.contrib.sam` is "
        "`gdopt.contrib.sam`), found by introspecting both packages, or the reason it is "
        "absent. The numbers of the losses, tree utilities, schedules and projections are "
        "compared with optax's in `tests/test_losses.py`, `tests/test_tree.py`, "
        "`tests/test_schedules.py` and `tests/test_projections.py`; argument names and "
        "defaults of the top-level names in `tests/test_api.py`.",
        "",
        "## Summary",
        "",
        "| namespace | optax names | in gdopt | absent |",
        "| --- | ---: | ---: | ---: |",
    ]
    total = have = 0
    for ns in NAMESPACES:
        in_ns = [r for r in table if r[0] == ns]
        n_have = sum(1 for r in in_ns if r[3])
        total += len(in_ns)
        have += n_have
        lines.append(f"| `{ns}` | {len(in_ns)} | {n_have} | {len(in_ns) - n_have} |")
    lines += [f"| **all** | **{total}** | **{have}** | **{total - have}** |", ""]
    lines += ["## Absent names and why", "", "| optax | kind | why |", "| --- | --- | --- |"]
    for ns, name, kind, path in table:
        if path is None:
            lines.append(f"| `{ns}.{name}` | {kind} | {REASONS.get(name, '**unexplained**')} |")
    lines.append("")
    for ns in NAMESPACES:
        in_ns = [r for r in table if r[0] == ns]
        lines += [f"## `{ns}`", "", "| optax | kind | gdopt |", "| --- | --- | --- |"]
        for _, name, kind, path in in_ns:
            lines.append(f"| `{name}` | {kind} | {f'`{path}`' if path else '—'} |")
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
