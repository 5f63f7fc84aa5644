"""Argument checks of the training engine (one function per argument kind).

Every check here runs on the host, once, before anything is compiled or trained: the data
(non-finite values, integer labels against the model's classes), the loss (a scalar, not a
vector or a ``(loss, aux)`` pair), the PRNG key, the optimizer's schedules on the steps the
run will take, and the checkpoint directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdopt import _compile
from gdopt._traits import traits_of
from gdopt._validation import check_int, is_key_array
from gdopt.tree import check_same_structure, tree_leaves_with_path

DIVERGENCE_MODES = ("stop", "raise", "skip")


def check_tol(tol: float | None) -> None:
    """``tol`` must be ``None`` or a finite number > 0."""
    if tol is None:
        return
    if isinstance(tol, (bool, np.bool_, str, bytes)) or not np.isscalar(tol):
        raise ValueError(f"tol must be a finite number > 0 or None, got {tol!r}.")
    if not np.isfinite(tol):
        raise ValueError(f"tol must be a finite number > 0 or None, got {tol!r}.")
    if not float(np.asarray(tol)) > 0:
        raise ValueError(f"tol must be a finite number > 0 or None, got {tol!r}.")


def check_epochs(name: str, value: Any) -> int:
    """An epoch count: an integer >= 1."""
    return check_int(name, value, 1)


def check_on_divergence(value: Any) -> None:
    """``on_divergence`` must be one of :data:`DIVERGENCE_MODES`."""
    if not isinstance(value, str) or value not in DIVERGENCE_MODES:
        raise ValueError(f"on_divergence must be 'stop', 'raise' or 'skip', got {value!r}.")


def key_data(key: jax.Array) -> jax.Array:
    """The raw ``uint32`` data of a key (typed or not), what a checkpoint stores."""
    return jax.random.key_data(key) if is_key_array(key) else key


def like_key(data: Any, like: jax.Array) -> jax.Array:
    """Raw key ``data`` back as a key of the kind of ``like``."""
    if is_key_array(like):
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(like))
    return jnp.asarray(data)


def check_finite_data(name: str, tree: Any) -> None:
    """Refuse NaN or inf in a floating-point array of ``tree``, naming the array (its key path)
    and the index of its first bad value."""
    for path, x in tree_leaves_with_path(tree):
        if not jnp.issubdtype(jnp.result_type(x), jnp.inexact):
            continue
        if bool(jnp.all(jnp.isfinite(x))):
            continue
        host = np.asarray(x)
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(host))[0])
        where = "" if path == "<root>" else path
        raise ValueError(
            f"{name}{where} holds a non-finite value ({host[index]}) at index {index} "
            f"({int(np.sum(~np.isfinite(host)))} of {host.size} values are nan/inf); "
            f"{'training on' if name == 'data' else 'evaluating'} it would give nan losses. "
            "Remove or impute those examples first."
        )


def _abstract_batch(data: Any, size: int, fill: str | None) -> tuple[list, list, Any]:
    """The float leaves of a batch of ``size`` examples as shapes, the integer leaves as
    concrete arrays filled with their global min (``fill="min"``) or max."""
    leaves, treedef = jax.tree.flatten(data)
    floats, ints = [], []
    for x in leaves:
        shape = (size, *np.shape(x)[1:])
        dtype = jnp.result_type(x)
        if fill is not None and jnp.issubdtype(dtype, jnp.integer):
            value = jnp.min(x) if fill == "min" else jnp.max(x)
            ints.append(jnp.full(shape, value, dtype))
            floats.append(None)
        else:
            ints.append(None)
            floats.append(jax.ShapeDtypeStruct(shape, dtype))
    return floats, ints, treedef


def check_loss(
    loss_fn: Callable[..., Any], params: Any, data: Any, size: int | None, name: str = "data"
) -> None:
    """Trace ``loss_fn`` once (no computation) on a batch of ``size`` examples of ``data``:
    it must return a scalar. Integer arrays of ``data`` (labels) are given as concrete
    batches holding their smallest and largest values, so a loss that checks its labels
    against the model's classes (:func:`gdopt.losses.softmax_cross_entropy_with_integer_labels`
    and the losses built on it) refuses labels outside ``[0, classes)`` now, before
    training."""
    extremes = tuple(
        (int(jnp.min(x)), int(jnp.max(x))) if x.size else None
        for x in jax.tree.leaves(data)
        if jnp.issubdtype(jnp.result_type(x), jnp.integer)
    )
    cache_key = (loss_fn, size, name, extremes, _compile.trace_config())
    cache_key += (_compile.signature(params, data),)
    if cache_key in _CHECKED:  # traced before with these shapes and label ranges
        return
    _check_loss(loss_fn, params, data, size, name)
    _CHECKED[cache_key] = None
    while len(_CHECKED) > 64:
        _CHECKED.pop(next(iter(_CHECKED)))


_CHECKED: dict[Any, None] = {}


def _check_loss(loss_fn: Callable[..., Any], params: Any, data: Any, size: int | None, name: str):
    abstract_params = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)), params
    )
    if data is None:
        _check_output(jax.eval_shape(loss_fn, abstract_params))
        return
    assert size is not None
    has_ints = any(jnp.issubdtype(jnp.result_type(x), jnp.integer) for x in jax.tree.leaves(data))
    for fill in ("min", "max") if has_ints else (None,):
        floats, ints, treedef = _abstract_batch(data, size, fill)

        def call(p: Any, fl: list, ints: list = ints, treedef: Any = treedef) -> Any:
            leaves = [i if i is not None else f for f, i in zip(fl, ints, strict=True)]
            return loss_fn(p, jax.tree.unflatten(treedef, leaves))

        try:
            out = jax.eval_shape(call, abstract_params, floats)
        except ValueError as e:
            if fill is None:
                raise
            labels = [
                f"{name}{'' if path == '<root>' else path} (values in [{int(jnp.min(x))}, "
                f"{int(jnp.max(x))}])"
                for path, x in tree_leaves_with_path(data)
                if jnp.issubdtype(jnp.result_type(x), jnp.integer)
            ]
            raise ValueError(
                f"the integer labels {', '.join(labels)} are refused by the loss: {e}"
            ) from e
        _check_output(out)


def check_loss_output(out: Any, has_aux: bool = False) -> None:
    """``out`` (the abstract value of a loss) must be a floating-point scalar, or with
    ``has_aux`` a pair whose first item is one; the message names ``has_aux`` otherwise."""
    if has_aux:
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise TypeError(
                "with has_aux=True, loss_fn must return a pair (loss, aux), got "
                f"{type(out).__name__}"
                + (f" of shape {np.shape(out)}" if hasattr(out, "shape") else "")
                + "; use has_aux=False for a loss that returns the scalar alone."
            )
        _check_output(out[0])
        return
    _check_output(out)


def _check_output(out: Any) -> None:
    if isinstance(out, (tuple, list)):
        raise TypeError(
            f"loss_fn must return a scalar loss, got a {type(out).__name__} of "
            f"{len(out)} values; a loss that returns (loss, aux) needs has_aux=True where it "
            "is supported (gdopt.make_step), and fit needs the loss alone: "
            "lambda p, b: loss_fn(p, b)[0]."
        )
    shape = getattr(out, "shape", None)
    if shape != ():
        raise TypeError(
            f"loss_fn must return a scalar (the mean loss over the batch), got shape {shape}; "
            "reduce it (jnp.mean), or, if it returns (loss, aux), use has_aux=True "
            "(gdopt.make_step) or pass the loss alone to fit."
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"loss_fn must return a floating-point scalar, got dtype {out.dtype}.")


def _schedules(key: Any) -> list[tuple[str, Callable[..., Any]]]:
    """The ``(name, schedule)`` pairs recorded in an optimizer's structural key: each callable
    ``("id", fn)`` entry, named by the argument name seen last before it."""
    found: list[tuple[str, Callable[..., Any]]] = []
    last = ""

    def visit(item: Any) -> None:
        nonlocal last
        if isinstance(item, str):
            if item.isidentifier() and item not in ("id", "named", "chain", "inject"):
                last = item
        elif isinstance(item, tuple):
            if (
                len(item) == 2
                and item[0] == "id"
                and callable(item[1])
                and not isinstance(item[1], type)
            ):
                found.append((last, item[1]))
                return
            for x in item:
                visit(x)

    visit(key)
    return found


MAX_SCHEDULE_STEPS = 1 << 22


def check_schedules(optimizer: Any, steps: int) -> None:
    """Evaluate every schedule of ``optimizer`` on the steps ``0 .. steps - 1`` the run will
    take (sampled when there are more than :data:`MAX_SCHEDULE_STEPS`): a negative or
    non-finite value is a ``ValueError`` naming the hyperparameter, the step and the value."""
    key = traits_of(optimizer).key
    if key is None or steps < 1:
        return
    if steps > MAX_SCHEDULE_STEPS:
        counts = np.unique(np.linspace(0, steps - 1, MAX_SCHEDULE_STEPS).astype(np.int64))
    else:
        counts = np.arange(steps)
    counts = jnp.asarray(counts, jnp.int32)
    seen: set[int] = set()
    for name, fn in _schedules(key):
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        try:
            values = np.asarray(jax.jit(jax.vmap(fn))(counts))
        except Exception:  # a static callable argument (a mask...), not a schedule
            continue
        if values.shape != counts.shape or not np.issubdtype(values.dtype, np.number):
            continue
        bad = ~np.isfinite(values) | (values < 0)
        if np.any(bad):
            i = int(np.argmax(bad))
            raise ValueError(
                f"the schedule of {name or 'a hyperparameter'} gives {values[i]} at step "
                f"{int(counts[i])}, within the {steps} steps this run takes; a schedule must "
                "stay finite and >= 0 (a negative learning rate ascends the loss)."
            )


def check_checkpoint_dir(
    directory: Any, resume: bool, all_steps: Callable[[Path], list[int]]
) -> Path:
    """The checkpoint directory as a writable :class:`~pathlib.Path` (created now); without
    ``resume`` it must hold no checkpoint yet (``all_steps(path)`` lists them)."""
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(
            f"checkpoint_dir must be a path (str or os.PathLike), got {type(directory).__name__}."
        )
    path = Path(directory).expanduser()
    if path.exists() and not path.is_dir():
        raise OSError(f"checkpoint_dir {str(path)!r} exists and is not a directory.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"checkpoint_dir {str(path)!r} cannot be created: {e.strerror}.") from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise OSError(f"checkpoint_dir {str(path)!r} is not writable.")
    steps = all_steps(path)
    if steps and not resume:
        raise ValueError(
            f"checkpoint_dir {str(path)!r} already holds checkpoints (epochs {steps}); pass "
            "resume=True to continue from the latest, or choose another directory."
        )
    return path


def optimizer_name(optimizer: Any) -> str:
    """A readable name of ``optimizer``: its factory (``adam``, ``chain``...), from its
    structural key, or ``"the optimizer"``."""
    found: list[str] = []

    def visit(item: Any) -> None:
        if found:
            return
        if isinstance(item, str) and item.startswith("gdopt.") and "." in item:
            found.append(item.rsplit(".", 1)[-1])
        elif isinstance(item, str) and item == "chain":
            found.append("chain")
        elif isinstance(item, tuple):
            for x in item:
                visit(x)

    visit(traits_of(optimizer).key)
    return found[0] if found else "the optimizer"


def check_params_are_arrays(params: Any, name: str = "params") -> None:
    """Refuse a leaf that is not an array or a number (a function, a string, an object: what
    an Equinox module passed whole holds), saying to filter the model first."""
    for path, x in tree_leaves_with_path(params):
        if hasattr(x, "dtype") or isinstance(x, (int, float, complex, np.number)):
            continue
        where = "" if path == "<root>" else path
        raise TypeError(
            f"{name}{where} is a {type(x).__name__}, not an array: an optimizer keeps "
            "per-parameter state only for arrays. Filter the model first and pass only its "
            "arrays (with Equinox: params, static = eqx.partition(model, eqx.is_inexact_array); "
            "rebuild with eqx.combine(params, static) inside the loss)."
        )


def check_opt_state(optimizer: Any, params: Any, opt_state: Any) -> None:
    """``opt_state`` must have the structure, shapes and dtypes of ``optimizer.init(params)``
    (computed abstractly): a state of another optimizer, of other parameters, or a plain
    tuple is refused naming the optimizer and the first differing key path."""
    name = optimizer_name(optimizer)
    expected = jax.eval_shape(optimizer.init, params)
    try:
        check_same_structure(opt_state, expected, ("opt_state", f"{name}.init(params)"))
    except ValueError as e:
        raise ValueError(
            f"opt_state is not a state of this optimizer ({name}) for these params: {e}"
        ) from None
    got = tree_leaves_with_path(opt_state)
    for (path, x), y in zip(got, jax.tree.leaves(expected), strict=True):
        dx, dy = jnp.result_type(x), jnp.result_type(y)
        if dx != dy:
            raise ValueError(
                f"opt_state is not a state of this optimizer ({name}) for these params: "
                f"opt_state{path} has dtype {dx} where {name}.init(params) gives {dy}."
            )
