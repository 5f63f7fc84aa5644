"""Checkpoints on orbax-checkpoint: save a training state, restore it exactly, find the latest.

The arrays are written by orbax-checkpoint (the JAX ecosystem's checkpoint engine; the
``checkpoint`` extra installs it), one step per sub-directory of ``directory``. gdopt adds
what a long run needs on top:

* **The state's own structure back.** A state is saved as its leaves plus a description
  (key paths, shapes, dtypes); :func:`restore` rebuilds it with the structure of ``like``, so
  NamedTuples, :class:`gdopt.HyperparamsState` and every optax-style state come back as
  the types they were, not as dicts or lists.
* **Checked before anything is loaded.** :func:`restore` compares the saved description with
  ``like`` and refuses a different structure, shape or dtype, naming the first key path that
  differs (orbax alone may restore a different shape partially).
* **Atomic, durable, verified.** :func:`save` returns once the step is on disk (synchronous);
  orbax writes into a temporary directory it renames when complete, and gdopt then writes a
  checksum of every file of the step. A step without its checksum (a save killed at any
  point) is not a step: :func:`latest_step` never names it, so the previous checkpoint stays
  the latest. :func:`restore` verifies the checksum and reports a truncated or corrupted
  checkpoint instead of loading part of it.

>>> import tempfile, gdopt, jax.numpy as jnp
>>> from gdopt import checkpoint
>>> opt = gdopt.adam(1e-3)
>>> state = opt.init({"w": jnp.ones(3)})
>>> d = tempfile.mkdtemp()
>>> _ = checkpoint.save(d, state, step=10)
>>> checkpoint.latest_step(d)
10
>>> back = checkpoint.restore(d, like=state)
>>> type(back).__name__, type(back[0]).__name__, float(back.hyperparams["learning_rate"])
('HyperparamsState', 'ScaleByAdamState', 0.001)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy
import numpy as np

from gdopt._validation import check_int
from gdopt.tree import key_path_str

__all__ = ["save", "restore", "latest_step", "all_steps", "require_orbax", "CheckpointError"]

FORMAT = "gdopt-checkpoint/1"
CHECKSUM = "gdopt_checksum.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be restored: missing, incomplete, corrupted or different from
    the state it is restored into."""


def require_orbax() -> None:
    """Import orbax-checkpoint now (``gdopt.fit`` calls this before training when given a
    ``checkpoint_dir``, so a missing extra fails first, and the first save is not slowed by
    the import).

    Raises:
      ImportError: orbax-checkpoint is not installed (``pip install 'gdopt[checkpoint]'``).
    """
    _orbax()


def _orbax():
    try:
        import orbax.checkpoint as ocp
    except ImportError as e:  # pragma: no cover - the extra is part of dev
        raise ImportError(
            "gdopt.checkpoint needs orbax-checkpoint: pip install 'gdopt[checkpoint]'."
        ) from e
    return ocp


def _manager(directory: Path, max_to_keep: int | None = None, create: bool = True):
    ocp = _orbax()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, enable_async_checkpointing=False, create=create
    )
    return ocp.CheckpointManager(directory, options=options)


def _directory(directory: str | os.PathLike) -> Path:
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory must be a path, got {type(directory).__name__}.")
    return Path(directory).expanduser().resolve()


def _describe(state: Any) -> tuple[list[Any], dict[str, Any]]:
    flat, treedef = jax.tree_util.tree_flatten_with_path(state)
    leaves, paths, shapes, dtypes = [], [], [], []
    for path, leaf in flat:
        if jax.numpy.issubdtype(getattr(leaf, "dtype", np.float32), jax.dtypes.prng_key):
            raise TypeError(
                f"state{key_path_str(path)} is a typed PRNG key; save jax.random.key_data(key) "
                "(or use jax.random.PRNGKey keys)."
            )
        arr = np.asarray(leaf) if not hasattr(leaf, "shape") else leaf
        leaves.append(arr)
        paths.append(key_path_str(path))
        shapes.append(list(np.shape(arr)))
        dtypes.append(str(np.dtype(arr.dtype)))
    meta = {
        "format": FORMAT,
        "treedef": str(treedef),
        "paths": paths,
        "shapes": shapes,
        "dtypes": dtypes,
    }
    return leaves, meta


def _files(step_dir: Path) -> list[Path]:
    return sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != CHECKSUM)


def _digest(step_dir: Path) -> dict[str, str]:
    out = {}
    for p in _files(step_dir):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out[str(p.relative_to(step_dir))] = h.hexdigest()
    return out


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself is durable once save returns
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _complete(directory: Path, step: int) -> bool:
    return (directory / str(step) / CHECKSUM).is_file()


def all_steps(directory: str | os.PathLike) -> list[int]:
    """The steps with a complete checkpoint in ``directory``, in increasing order (``[]`` when
    the directory does not exist).

    A step whose save did not finish (killed at any point) is not listed.
    """
    directory = _directory(directory)
    if not directory.is_dir():
        return []
    steps = []
    for child in directory.iterdir():
        if child.is_dir() and child.name.isdigit() and _complete(directory, int(child.name)):
            steps.append(int(child.name))
    return sorted(steps)


def latest_step(directory: str | os.PathLike) -> int | None:
    """The latest step with a complete checkpoint in ``directory``, or ``None``."""
    steps = all_steps(directory)
    return steps[-1] if steps else None


def save(
    directory: str | os.PathLike, state: Any, *, step: int, max_to_keep: int | None = None
) -> Path:
    """Save ``state`` (any pytree of arrays) as step ``step`` of ``directory``.

    The save is synchronous: when it returns, the step is on disk, checksummed, and the
    latest (if ``step`` is the largest). A save interrupted at any point leaves the previous
    checkpoints as they were and no partial step visible.

    Args:
      directory: the checkpoint directory (created if needed).
      state: a pytree of arrays (a :class:`gdopt.FitState`, an optimizer state, params...).
      step: a non-negative integer, larger than the steps already saved is usual; saving an
        existing step raises.
      max_to_keep: keep only this many of the latest steps (``None``: all).

    Returns:
      The step's directory.

    Raises:
      ValueError: a bad step or ``max_to_keep``, or the step exists.
      TypeError: a leaf that cannot be saved (a typed PRNG key, a non-array).
    """
    step = check_int("step", step, 0)
    if max_to_keep is not None:
        max_to_keep = check_int("max_to_keep", max_to_keep, 1)
    directory = _directory(directory)
    if _complete(directory, step):
        raise ValueError(f"checkpoint step {step} already exists in {directory}.")
    if (directory / str(step)).exists():  # the remains of a save that was killed
        shutil.rmtree(directory / str(step))
    leaves, meta = _describe(state)
    ocp = _orbax()
    flat = {f"{i:06d}": leaf for i, leaf in enumerate(leaves)}
    directory.mkdir(parents=True, exist_ok=True)
    manager = _manager(directory, max_to_keep)
    try:
        manager.save(
            step,
            args=ocp.args.Composite(
                leaves=ocp.args.StandardSave(flat), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        manager.wait_until_finished()
    finally:
        manager.close()
    step_dir = directory / str(step)
    digest = {"format": FORMAT, "files": _digest(step_dir)}
    _write_atomic(step_dir / CHECKSUM, json.dumps(digest, indent=1).encode())
    return step_dir


def _compare(meta: dict, like: Any) -> None:
    _, expected = _describe_abstract(like)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"not a gdopt checkpoint (format {meta.get('format')!r}).")
    saved = list(zip(meta["paths"], meta["shapes"], meta["dtypes"], strict=True))
    wanted = list(zip(expected["paths"], expected["shapes"], expected["dtypes"], strict=True))
    for (p, s, d), (q, t, e) in zip(saved, wanted, strict=False):
        if p != q:
            raise CheckpointError(
                f"the checkpoint's structure differs from like's: it has {p} where like has "
                f"{q} (first difference)."
            )
        if list(s) != list(t):
            raise CheckpointError(
                f"the checkpoint's leaf {p} has shape {tuple(s)}, like's has {tuple(t)}."
            )
        if d != e:
            raise CheckpointError(f"the checkpoint's leaf {p} has dtype {d}, like's has {e}.")
    if len(saved) != len(wanted):
        longer, name = (saved, "the checkpoint") if len(saved) > len(wanted) else (wanted, "like")
        raise CheckpointError(
            f"{name} has more leaves ({len(longer)} against {min(len(saved), len(wanted))}); "
            f"the first extra one is {longer[min(len(saved), len(wanted))][0]}."
        )
    if meta["treedef"] != expected["treedef"]:
        raise CheckpointError(
            "the checkpoint's pytree structure differs from like's (same leaves, other "
            f"containers):\n  saved: {meta['treedef']}\n  like:  {expected['treedef']}"
        )


def _describe_abstract(like: Any) -> tuple[Any, dict[str, Any]]:
    flat, treedef = jax.tree_util.tree_flatten_with_path(like)
    return treedef, {
        "treedef": str(treedef),
        "paths": [key_path_str(p) for p, _ in flat],
        "shapes": [list(np.shape(x)) for _, x in flat],
        "dtypes": [str(np.dtype(x.dtype)) for _, x in flat],
    }


def restore(directory: str | os.PathLike, like: Any, step: int | None = None) -> Any:
    """Restore a checkpoint into the structure of ``like``.

    Args:
      directory: the checkpoint directory.
      like: a pytree with the structure, shapes and dtypes of the saved state (the state
        itself, or its ``jax.eval_shape``); the result has its container types.
      step: the step to restore (default: :func:`latest_step`).

    Returns:
      The restored state.

    Raises:
      CheckpointError (a ``ValueError``): no complete checkpoint, a step that does not
        exist, a checkpoint whose structure, shape or dtype differs from ``like`` (the key
        path is named), or one whose files do not match their checksum (truncated or
        corrupted).
    """
    directory = _directory(directory)
    if step is None:
        step = latest_step(directory)
        if step is None:
            raise CheckpointError(f"no complete checkpoint in {directory}.")
    step = check_int("step", step, 0)
    step_dir = directory / str(step)
    if not _complete(directory, step):
        raise CheckpointError(
            f"no complete checkpoint for step {step} in {directory} (steps: "
            f"{all_steps(directory)})."
        )
    digest = json.loads((step_dir / CHECKSUM).read_text())
    actual = _digest(step_dir)
    for name, h in digest["files"].items():
        if name not in actual:
            raise CheckpointError(f"checkpoint step {step} is missing its file {name}.")
        if actual[name] != h:
            raise CheckpointError(
                f"checkpoint step {step} is corrupted: {name} does not match its checksum."
            )
    ocp = _orbax()
    manager = _manager(directory, create=False)
    try:
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        _compare(meta, like)
        treedef, _ = _describe_abstract(like)
        abstract = {
            f"{i:06d}": jax.ShapeDtypeStruct(np.shape(x), x.dtype)
            for i, x in enumerate(jax.tree.leaves(like))
        }
        leaves = manager.restore(
            step, args=ocp.args.Composite(leaves=ocp.args.StandardRestore(abstract))
        )["leaves"]
    finally:
        manager.close()
    return treedef.unflatten([leaves[f"{i:06d}"] for i in range(len(abstract))])
