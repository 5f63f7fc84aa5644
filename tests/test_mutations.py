"""``scripts/mutations.py`` stays in sync with the source: every mutation's original text
occurs exactly once in its file, and its tests exist (running the mutations themselves takes
minutes: ``python scripts/mutations.py``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("mutations", ROOT / "scripts" / "mutations.py")
assert _spec is not None and _spec.loader is not None
mutations = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mutations)


@pytest.mark.parametrize(
    "mutation", mutations.MUTATIONS, ids=[m[0][:60] for m in mutations.MUTATIONS]
)
def test_mutation_text_is_found_once_and_its_tests_exist(mutation):
    name, path, original, mutated, tests = mutation
    source = (ROOT / path).read_text(encoding="utf-8")
    assert source.count(original) == 1, f"{name}: the original text is not found once in {path}"
    assert original != mutated
    for target in tests.split():
        if not target.startswith("-") and "/" in target:
            assert (ROOT / target.split("::")[0]).exists(), f"{name}: no {target}"
