"""Build, run and check the research notebooks in ``notebooks/``.

Each notebook is written as a jupytext "percent" script (``notebooks/NN_name.py``, the
reviewable source) and committed executed as ``notebooks/NN_name.ipynb`` (its figures render
on a repository page). The notebooks read ``GDOPT_NOTEBOOK_SIZE`` (``full`` by default,
``small`` in CI) to choose their problem sizes::

    python scripts/notebooks.py build            # execute every script at full size, write .ipynb
    python scripts/notebooks.py build -k 04      # only the notebooks whose name contains 04
    python scripts/notebooks.py run --size small # execute every script, write nothing (CI)
    python scripts/notebooks.py check            # the committed .ipynb match their scripts

``check`` needs no kernel: it verifies that every script has its notebook, that their code
cells are the same text, that no output is an error, that every notebook shows a figure, and
that no output holds an absolute path of the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
_ABSOLUTE = re.compile(r"(/work/|/tmp/|/root/|/home/\w+/|[A-Z]:\\\\Users)")


def scripts(pattern: str = "") -> list[Path]:
    """The notebook scripts ``notebooks/NN_*.py`` whose name contains ``pattern``."""
    return sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.py") if pattern in p.name)


def _to_notebook(script: Path):
    import jupytext

    nb = jupytext.read(script)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def execute(script: Path, size: str, timeout: int = 600):
    """``script`` as a notebook, executed from a clean kernel in ``notebooks/``."""
    from nbclient import NotebookClient

    nb = _to_notebook(script)
    env_before = os.environ.get("GDOPT_NOTEBOOK_SIZE")
    os.environ["GDOPT_NOTEBOOK_SIZE"] = size
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    try:
        NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(NOTEBOOKS)}},
        ).execute()
    finally:
        if env_before is None:
            os.environ.pop("GDOPT_NOTEBOOK_SIZE", None)
        else:
            os.environ["GDOPT_NOTEBOOK_SIZE"] = env_before
    return nb


def _code_sources(nb) -> list[str]:
    return [c.source.strip() for c in nb.cells if c.cell_type == "code"]


def problems(script: Path) -> list[str]:
    """What is wrong with the committed notebook of ``script`` (empty when nothing is)."""
    import nbformat

    path = script.with_suffix(".ipynb")
    if not path.exists():
        return [f"{path.name} is missing: run python scripts/notebooks.py build -k {script.stem}"]
    nb = nbformat.read(path, as_version=4)
    out = []
    if _code_sources(nb) != _code_sources(_to_notebook(script)):
        out.append(f"{path.name} is not built from the current {script.name}: rebuild it")
    images = 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("execution_count") is None and cell.source.strip():
            out.append(f"{path.name}: code cell {i} was not executed")
        for o in cell.get("outputs", []):
            if o.get("output_type") == "error":
                out.append(f"{path.name}: cell {i} ends in {o.get('ename')}: {o.get('evalue')}")
            data = o.get("data", {})
            images += "image/png" in data
            text = o.get("text", "") + str(data.get("text/plain", ""))
            if _ABSOLUTE.search(text):
                out.append(f"{path.name}: cell {i} prints an absolute path")
    if images == 0:
        out.append(f"{path.name} shows no figure")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["build", "run", "check"])
    parser.add_argument("-k", default="", help="only notebooks whose name contains this")
    parser.add_argument("--size", default=None, help="full (build's default) or small (run's)")
    args = parser.parse_args(argv)
    todo = scripts(args.k)
    if not todo:
        print("no notebooks match", file=sys.stderr)
        return 1
    if args.command == "check":
        found = [p for s in todo for p in problems(s)]
        print("\n".join(found) or f"{len(todo)} notebooks match their scripts")
        return 1 if found else 0
    import nbformat

    size = args.size or ("full" if args.command == "build" else "small")
    total = time.perf_counter()
    for script in todo:
        t0 = time.perf_counter()
        nb = execute(script, size)
        if args.command == "build":
            nbformat.write(nb, script.with_suffix(".ipynb"))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                nbformat.write(nb, Path(tmp) / script.with_suffix(".ipynb").name)
        print(f"{script.name}: executed ({size}) in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"all {len(todo)} notebooks in {time.perf_counter() - total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
