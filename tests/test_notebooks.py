"""``notebooks/``: the committed notebooks are built from their scripts and carry no stray state.

Executing them is CI's separate step (``python scripts/notebooks.py run --size small``); here
only what needs no kernel: every script has its executed notebook with the same code, no
error outputs, at least one figure and no absolute paths (``scripts/notebooks.py check``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("notebooks_script", ROOT / "scripts/notebooks.py")
assert _spec is not None and _spec.loader is not None
notebooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(notebooks)

SCRIPTS = notebooks.scripts()


def test_there_are_notebooks():
    assert SCRIPTS, "notebooks/ has no NN_name.py scripts"


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_committed_notebook_matches_its_script(script):
    assert notebooks.problems(script) == []


def test_check_reports_a_stale_notebook(tmp_path, monkeypatch):
    script = SCRIPTS[0]
    copy = tmp_path / script.name
    copy.write_text(script.read_text() + "\n# %%\nprint('a new cell')\n")
    (tmp_path / script.with_suffix(".ipynb").name).write_bytes(
        script.with_suffix(".ipynb").read_bytes()
    )
    assert any("not built from the current" in p for p in notebooks.problems(copy))
