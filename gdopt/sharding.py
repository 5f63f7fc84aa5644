"""Training on several devices with JAX's own engine: meshes, shardings and placements.

gdopt runs on many devices by placing arrays with :class:`jax.sharding.NamedSharding` on a
:class:`jax.sharding.Mesh` and letting ``jax.jit`` partition the compiled program: XLA
inserts the collectives (the gradient all-reduce of data parallelism, the gathers of a
sharded optimizer state). There is no ``pmap`` and no hand-written communication. This
module holds the pieces :func:`gdopt.fit` and :func:`gdopt.make_step` use when given
``mesh=``:

- :func:`make_mesh`: ``"auto"`` (every device on one data axis) or a mesh you built;
- :func:`state_shardings`: where an optimizer state goes. *State follows the parameters*:
  each per-parameter moment gets its parameter's sharding, everything else (counts,
  hyperparameters, factored statistics) is replicated; with ``shard_over`` (ZeRO-1 style,
  ``shard_opt_state=True``) every non-scalar leaf is also split over the data axis along
  its first free dimension that the axis size divides (replicated when none does);
- :func:`init_state`: ``optimizer.init`` compiled with those output shardings;
- :func:`place`: what ``fit`` calls: checks the mesh, the data axis and the batch size,
  places the parameters (keeping the sharding they come with, replicated otherwise), the
  optimizer state and the data (split over the data axis along the example axis), and
  returns the loss and optimizer wrapped so that inside the compiled loop every batch is
  split over the data axis and the parameters and state keep their shardings;
- :func:`bytes_per_device` and :func:`memory_analysis`: what each device holds.

With several processes (``jax.distributed.initialize``) the same calls work: the mesh spans
every process's devices, every process passes the same global arrays and each one puts only
its own share on its devices (:func:`jax.make_array_from_callback`).

``jax.jit(optimizer.init)`` itself already gives per-parameter moments their parameter's
sharding (the state is built with :func:`gdopt.tree.tree_zeros_like`, which follows the
leaves' shardings inside ``jit``) and replicates the rest on the parameters' mesh (named
optimizers compute their hyperparameters there); :func:`init_state` states the shardings
explicitly (``out_shardings``), which ZeRO-1 needs.

>>> import gdopt, jax, jax.numpy as jnp
>>> mesh = make_mesh("auto")
>>> mesh.axis_names
('data',)
>>> params = {"w": jnp.zeros((8, 2))}
>>> state = init_state(gdopt.adam(1e-3), params, mesh)
>>> state[0].mu["w"].sharding.spec
P()
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from gdopt._traits import Traits, combined_key, with_traits
from gdopt.base import GradientTransformation
from gdopt.batching import dataset_size
from gdopt.tree import key_path_str

__all__ = [
    "make_mesh",
    "check_mesh",
    "check_batch",
    "param_shardings",
    "state_shardings",
    "zero_spec",
    "init_state",
    "place",
    "Placement",
    "shard_data",
    "shard_runs",
    "bytes_per_device",
    "memory_analysis",
    "mesh_step",
]

PyTree = Any


# ----------------------------------------------------------------------------- meshes


def make_mesh(mesh: Mesh | str | None = "auto", data_axis: str = "data") -> Mesh:
    """The mesh :func:`gdopt.fit` runs on.

    Args:
      mesh: ``"auto"``: every device (of every process) on one axis named ``data_axis``; a
        :class:`jax.sharding.Mesh` is checked (:func:`check_mesh`) and returned with its axes
        typed ``Auto`` (the compiler partitions the program; shardings are not part of the
        traced types), on the same devices in the same order.
      data_axis: the name of the axis the batch is split over.

    Returns:
      A :class:`jax.sharding.Mesh` whose axes are all ``AxisType.Auto``.

    Raises:
      ValueError: see :func:`check_mesh`.
      TypeError: ``mesh`` is neither ``"auto"`` nor a ``Mesh``.

    >>> make_mesh("auto").shape["data"] == jax.device_count()
    True
    """
    if isinstance(mesh, str) and mesh == "auto":
        if not isinstance(data_axis, str) or not data_axis:
            raise ValueError(f"data_axis must be a non-empty string, got {data_axis!r}.")
        devices = np.asarray(jax.devices())
        return Mesh(devices, (data_axis,), axis_types=(AxisType.Auto,))
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"mesh must be 'auto', a jax.sharding.Mesh or None, got {type(mesh).__name__} "
            f"{mesh!r}. Build one with jax.make_mesh((n,), ('data',))."
        )
    check_mesh(mesh, data_axis)
    if all(t == AxisType.Auto for t in mesh.axis_types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * mesh.devices.ndim)


def check_mesh(mesh: Mesh, data_axis: str = "data") -> None:
    """Raise ``ValueError`` unless ``mesh`` can run training with batches split over
    ``data_axis``.

    Refused: a mesh with no devices, a ``data_axis`` the mesh lacks (the message lists its
    axes and sizes), and a mesh with devices of other processes when ``jax.distributed`` is
    not initialised (or devices this run does not know).

    >>> check_mesh(make_mesh("auto"), "batch")
    Traceback (most recent call last):
    ...
    ValueError: data_axis='batch' is not an axis of the mesh; its axes are {'data': ...}. Pass data_axis= one of them, or build the mesh with that axis.
    """
    if mesh.devices.size == 0:
        raise ValueError(
            f"mesh has no devices (shape {dict(mesh.shape)}); build it from at least one "
            "device, e.g. jax.make_mesh((jax.device_count(),), ('data',))."
        )
    if data_axis not in mesh.axis_names:
        sizes = dict(mesh.shape)
        raise ValueError(
            f"data_axis={data_axis!r} is not an axis of the mesh; its axes are {sizes}. Pass "
            "data_axis= one of them, or build the mesh with that axis."
        )
    procs = {getattr(d, "process_index", 0) for d in mesh.devices.flat}
    if len(procs) > 1 and jax.process_count() == 1:
        raise ValueError(
            f"mesh spans {len(procs)} processes ({mesh.devices.size} devices) but "
            "jax.distributed is not initialised (this run has 1 process and "
            f"{jax.device_count()} devices); call jax.distributed.initialize(...) in every "
            "process before building the mesh."
        )
    known = {d.id for d in jax.devices()}
    foreign = [d for d in mesh.devices.flat if d.id not in known]
    if foreign:
        raise ValueError(
            f"mesh holds {len(foreign)} device(s) this run does not know (e.g. {foreign[0]}); "
            f"it has {jax.device_count()} device(s) in {jax.process_count()} process(es)."
        )


def _axis_size(mesh: Mesh, axis: str) -> int:
    return int(mesh.shape[axis])


# ----------------------------------------------------------------------------- specs


def _spec_axes(spec: PartitionSpec) -> list[str]:
    out: list[str] = []
    for entry in spec:
        if entry is None:
            continue
        out.extend(entry if isinstance(entry, tuple) else (entry,))
    return [a for a in out if isinstance(a, str)]


def _spec_of(x: Any, mesh: Mesh, path: str, name: str) -> PartitionSpec:
    """The partition spec ``x`` comes with on ``mesh`` (``P()`` for a single-device or host
    array), checked against the mesh's axes."""
    sharding = getattr(x, "sharding", None)
    if isinstance(sharding, NamedSharding):
        spec = sharding.spec
        missing = [a for a in _spec_axes(spec) if a not in mesh.axis_names]
        if missing:
            raise ValueError(
                f"{name}{path} is sharded over axis {missing[0]!r} (spec {spec}), which the "
                f"mesh lacks; the mesh's axes are {dict(mesh.shape)}."
            )
        own = np.asarray(getattr(sharding.mesh, "devices", np.empty((0,))), object)
        if {d.id for d in own.flat} != {d.id for d in mesh.devices.flat}:
            if not sharding.is_fully_replicated:
                raise ValueError(
                    f"{name}{path} is sharded over a mesh of {own.size} "
                    f"device(s) ({dict(sharding.mesh.shape)}), not over the mesh given "
                    f"({dict(mesh.shape)}); place it on that mesh or pass it unsharded."
                )
            return PartitionSpec()
        for dim, entry in enumerate(spec):
            if entry is None:
                continue
            axes = entry if isinstance(entry, tuple) else (entry,)
            size = math.prod(_axis_size(mesh, a) for a in axes)
            if np.shape(x)[dim] % size:
                raise ValueError(
                    f"{name}{path} has {np.shape(x)[dim]} entries along dimension {dim}, "
                    f"not divisible by the {size} devices of mesh axis {entry!r}."
                )
        return spec
    return PartitionSpec()


def param_shardings(params: PyTree, mesh: Mesh) -> PyTree:
    """A :class:`~jax.sharding.NamedSharding` on ``mesh`` per parameter leaf: the spec the
    leaf is sharded with (a :class:`~jax.sharding.NamedSharding` over the mesh's axes), or
    replicated (``P()``) for any other array.

    Raises:
      ValueError: a leaf sharded over an axis the mesh lacks, or over another mesh (the
        message names the key path and the sizes).

    >>> param_shardings({"w": jnp.zeros(2)}, make_mesh("auto"))["w"].spec
    P()
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    out = [NamedSharding(mesh, _spec_of(x, mesh, key_path_str(p), "params")) for p, x in flat]
    return treedef.unflatten(out)


def zero_spec(shape: Sequence[int], spec: PartitionSpec, mesh: Mesh, axis: str) -> PartitionSpec:
    """``spec`` with ``axis`` added on the first dimension of ``shape`` it leaves free whose
    length the axis size divides (ZeRO-1 placement of an optimizer moment); ``spec``
    unchanged when it already uses ``axis``, for scalars, and when no dimension fits.

    >>> m = make_mesh("auto")
    >>> zero_spec((8 * jax.device_count(), 3), PartitionSpec(), m, "data")
    P('data', None)
    >>> zero_spec((), PartitionSpec(), m, "data")
    P()
    """
    if not shape or axis in _spec_axes(spec):
        return spec
    n = _axis_size(mesh, axis)
    entries = list(spec) + [None] * (len(shape) - len(spec))
    for dim, length in enumerate(shape):
        if entries[dim] is None and length % n == 0 and length >= n:
            entries[dim] = axis
            return PartitionSpec(*entries)
    return spec


def _follow_spec(shape: tuple, param_shape: tuple, spec: PartitionSpec) -> PartitionSpec:
    """The spec of a state leaf belonging to a parameter: the parameter's own for its shape,
    the parameter's on the trailing dimensions of a stack of parameter-shaped slots (L-BFGS
    histories), replicated otherwise."""
    if shape == param_shape:
        return spec
    k = len(shape) - len(param_shape)
    if param_shape and k > 0 and shape[k:] == param_shape:
        entries = list(spec) + [None] * (len(param_shape) - len(spec))
        return PartitionSpec(*([None] * k), *entries)
    return PartitionSpec()


def state_shardings(
    optimizer: GradientTransformation,
    params: PyTree,
    mesh: Mesh,
    *,
    shard_over: str | None = None,
    state: PyTree = None,
) -> PyTree:
    """Where each leaf of ``optimizer``'s state goes on ``mesh``.

    State follows the parameters: a leaf inside a subtree with the parameters' structure
    and with its parameter's shape (``mu["w"]`` for ``params["w"]``) gets that parameter's
    sharding (a stack of such slots, as L-BFGS keeps, gets it on its trailing dimensions);
    every other leaf (counts, hyperparameters, factored row/column statistics,
    L-BFGS histories) is replicated. With ``shard_over`` (a mesh axis), every non-scalar leaf
    is further split over that axis along a dimension it divides (:func:`zero_spec`).

    Args:
      optimizer: the gradient transformation.
      params: the parameters (arrays, possibly sharded on ``mesh``, or
        :class:`jax.ShapeDtypeStruct`).
      mesh: the device mesh.
      shard_over: the axis to split the state over (ZeRO-1), or ``None``.
      state: the state itself (default: its shape, from ``jax.eval_shape(optimizer.init,
        params)``).

    Returns:
      A pytree of :class:`~jax.sharding.NamedSharding` with the state's structure.

    >>> import gdopt
    >>> sh = state_shardings(gdopt.adam(1e-3), {"w": jnp.zeros((8, 2))}, make_mesh("auto"))
    >>> sh[0].count.spec, sh[0].mu["w"].spec
    (P(), P())
    """
    p_shardings = param_shardings(params, mesh)
    if state is None:
        shaped = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)), params
        )
        state = jax.eval_shape(optimizer.init, shaped)
    p_leaves, p_def = jax.tree.flatten(params)
    s_leaves = jax.tree.leaves(p_shardings)
    specs = [s.spec for s in s_leaves]

    def like_params(t: Any) -> bool:
        if t is None:
            return False
        try:
            p_def.flatten_up_to(t)
        except (ValueError, TypeError):
            return False
        return True

    def leaf_spec(x: Any, base: PartitionSpec) -> NamedSharding:
        spec = base
        if shard_over is not None:
            spec = zero_spec(np.shape(x), spec, mesh, shard_over)
        return NamedSharding(mesh, spec)

    def visit(t: Any) -> Any:
        if like_params(t) and p_leaves:
            parts = p_def.flatten_up_to(t)
            out = []
            for part, p, spec in zip(parts, p_leaves, specs, strict=True):
                out.append(
                    jax.tree.map(
                        lambda x, p=p, spec=spec: leaf_spec(
                            x, _follow_spec(np.shape(x), np.shape(p), spec)
                        ),
                        part,
                    )
                )
            return p_def.unflatten(out)
        return leaf_spec(t, PartitionSpec())

    return jax.tree.map(visit, state, is_leaf=like_params)


def _zero_shardings(shardings: PyTree, shapes: PyTree, mesh: Mesh, axis: str) -> PyTree:
    return jax.tree.map(
        lambda s, x: NamedSharding(mesh, zero_spec(np.shape(x), s.spec, mesh, axis)),
        shardings,
        shapes,
    )


# ----------------------------------------------------------------------------- placing


def _put(x: Any, sharding: NamedSharding) -> jax.Array:
    """``x`` as a global array with ``sharding``; with several processes each one transfers
    only the shards of its own devices (every process passes the same global value)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return x if x.sharding.is_equivalent_to(sharding, x.ndim) else jax.device_put(x, sharding)
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def init_state(
    optimizer: GradientTransformation,
    params: PyTree,
    mesh: Mesh,
    *,
    shard_over: str | None = None,
) -> PyTree:
    """``optimizer.init(params)`` compiled onto ``mesh`` with :func:`state_shardings`.

    The parameters are placed first (their own sharding, else replicated), so the state is
    created where it will live, each device building only its shards.

    >>> import gdopt
    >>> s = init_state(gdopt.sgd(0.1), {"w": jnp.zeros(2)}, make_mesh("auto"))
    >>> s.hyperparams["learning_rate"].sharding.is_fully_replicated
    True
    """
    p_sh = param_shardings(params, mesh)
    placed = jax.tree.map(_put, params, p_sh)
    out = state_shardings(optimizer, placed, mesh, shard_over=shard_over)
    return jax.jit(optimizer.init, out_shardings=out)(placed)


def _data_spec(x: Any, mesh: Mesh, axis: str) -> PartitionSpec:
    n = _axis_size(mesh, axis)
    if np.ndim(x) and np.shape(x)[0] % n == 0:
        return PartitionSpec(axis)
    return PartitionSpec()


def shard_data(data: PyTree, mesh: Mesh, data_axis: str = "data") -> PyTree:
    """``data`` split over ``data_axis`` along the example (leading) axis; a leaf whose
    length the axis size does not divide is replicated.

    >>> x = shard_data(jnp.zeros((4 * jax.device_count(), 3)), make_mesh("auto"))
    >>> x.sharding.spec
    P('data',)
    """
    if data is None:
        return None
    return jax.tree.map(
        lambda x: _put(x, NamedSharding(mesh, _data_spec(x, mesh, data_axis))), data
    )


def shard_runs(runs: PyTree, mesh: Mesh | str, axis: str = "data") -> PyTree:
    """A stack of K training runs (every leaf with a leading axis of length K, e.g.
    ``jax.vmap``-ed :class:`~gdopt.FitState`\\ s of a sweep) split over ``axis``: each device
    trains ``K / N`` of them, and ``jax.jit(jax.vmap(train))`` on the result runs them in
    parallel with no communication between runs. Leaves whose K the axis size does not
    divide, and scalars, are replicated.

    >>> stacked = shard_runs({"lr": jnp.zeros(2 * jax.device_count())}, "auto")
    >>> stacked["lr"].sharding.spec
    P('data',)
    """
    mesh = make_mesh(mesh, axis)
    return jax.tree.map(lambda x: _put(x, NamedSharding(mesh, _data_spec(x, mesh, axis))), runs)


def _constrain(tree: PyTree, shardings: PyTree) -> PyTree:
    return jax.tree.map(jax.lax.with_sharding_constraint, tree, shardings)


@functools.lru_cache(maxsize=64)
def _split_batches(loss_fn: Callable[..., Any], mesh: Mesh, axis: str) -> Callable[..., Any]:
    """``loss_fn`` whose batch is split over ``axis`` (the same wrapper for the same
    arguments, so compiled programs keyed on the loss's identity are reused)."""
    n = _axis_size(mesh, axis)

    def split(x: Any) -> Any:
        if np.ndim(x) and np.shape(x)[0] % n == 0:
            return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(axis)))
        return x

    @functools.wraps(loss_fn)
    def loss(params: Any, batch: Any, *args: Any, **kwargs: Any) -> Any:
        return loss_fn(params, jax.tree.map(split, batch), *args, **kwargs)

    return loss


def _keep_shardings(
    optimizer: GradientTransformation, p_shardings: PyTree, s_shardings: PyTree
) -> GradientTransformation:
    """``optimizer`` whose updates keep the parameters' shardings and whose new state keeps
    ``s_shardings`` (so every compiled call returns the carry the way it came in)."""
    inner = optimizer.update

    def update(updates, state, params=None, **extra):
        # every value of the carry is pinned where it came in: the incoming parameters and
        # state (a use of the loop carry, which the compiler's choice of the carry's
        # sharding follows), the gradient, the updates and the new state
        updates, state = _constrain(updates, p_shardings), _constrain(state, s_shardings)
        if params is not None:
            params = _constrain(params, p_shardings)
        updates, state = inner(updates, state, params, **extra)
        return _constrain(updates, p_shardings), _constrain(state, s_shardings)

    tx = GradientTransformation(optimizer.init, update)
    specs = (
        str(jax.tree.structure(p_shardings)),
        tuple(str(s.spec) for s in jax.tree.leaves(p_shardings)),
        tuple(str(s.spec) for s in jax.tree.leaves(s_shardings)),
        tuple(_mesh_key(s.mesh) for s in jax.tree.leaves(p_shardings)[:1]),
    )
    key = combined_key("gdopt.sharding.keep_shardings", [optimizer], specs)
    return with_traits(tx, Traits(packable=False, key=key))


def _mesh_key(mesh: Mesh) -> tuple:
    """A hashable identity of a mesh: its axes, sizes, types and device ids in order."""
    return (
        tuple(mesh.axis_names),
        tuple(mesh.devices.shape),
        tuple(str(t) for t in mesh.axis_types),
        tuple(int(d.id) for d in mesh.devices.flat),
    )


@dataclasses.dataclass(frozen=True)
class Placement:
    """What :func:`place` returns: the arguments of the compiled loop, on the mesh.

    Attributes:
      params, opt_state, data, eval_data: placed (global arrays with their shardings).
      loss_fn: the loss, its batch split over the data axis inside the compiled step.
      optimizer: the optimizer, its updates and new state constrained to the shardings they
        came with.
      mesh: the mesh (axes typed ``Auto``).
      param_shardings, state_shardings: the shardings of ``params`` and ``opt_state``.
    """

    params: Any
    opt_state: Any
    data: Any
    eval_data: Any
    loss_fn: Callable[..., Any]
    optimizer: GradientTransformation
    mesh: Mesh
    param_shardings: Any
    state_shardings: Any


def check_batch(batch_size: int | None, n: int | None, mesh: Mesh, data_axis: str) -> None:
    """Raise ``ValueError`` unless the batch splits evenly over ``data_axis``.

    >>> check_batch(3, 12, Mesh(np.asarray(jax.devices()[:1] * 1).reshape(1), ("data",)), "data")
    """
    size = _axis_size(mesh, data_axis)
    if n is None:
        return
    batch = n if batch_size is None else int(batch_size)
    if batch % size:
        what = (
            f"batch_size={batch_size}"
            if batch_size is not None
            else (f"the full batch (batch_size=None: all {n} examples)")
        )
        raise ValueError(
            f"{what} is not divisible by the size of the data axis {data_axis!r} "
            f"({size} devices); pass a batch size that is a multiple of {size}."
        )


def place(
    params: PyTree,
    opt_state: PyTree,
    data: PyTree,
    eval_data: PyTree,
    *,
    loss_fn: Callable[..., Any],
    optimizer: GradientTransformation,
    mesh: Mesh | str,
    data_axis: str = "data",
    shard_opt_state: bool = False,
    batch_size: int | None = None,
    pack: bool | None = None,
) -> Placement:
    """Everything :func:`gdopt.fit` needs to train on ``mesh``, checked and placed.

    - parameters keep the sharding they come with (a ``NamedSharding`` over the mesh's
      axes), other arrays are replicated;
    - the optimizer state is ``opt_state`` placed, or ``optimizer.init`` compiled onto the
      mesh (:func:`init_state`), following :func:`state_shardings` (``shard_opt_state``:
      each moment split over ``data_axis``);
    - ``data`` and ``eval_data`` are split over ``data_axis`` along the example axis
      (:func:`shard_data`);
    - the loss splits every batch over ``data_axis`` inside the compiled step, and the
      optimizer's updates and state keep their shardings, so XLA reduces the gradients with
      its collectives and every compiled call returns the carry with the shardings it got.

    Args:
      params, opt_state, data, eval_data: as given to :func:`gdopt.fit` (``opt_state`` and
        ``eval_data`` may be ``None``; ``data`` ``None`` for a deterministic objective).
      loss_fn, optimizer: as given to :func:`gdopt.fit`.
      mesh: ``"auto"`` or a :class:`jax.sharding.Mesh`.
      data_axis: the mesh axis the batch is split over.
      shard_opt_state: split the optimizer state over ``data_axis`` (ZeRO-1).
      batch_size: ``fit``'s batch size (checked: the batch must split evenly).
      pack: ``fit``'s ``pack``: a mesh runs unpacked (``True`` is refused; the flat buffers
        of :mod:`gdopt.packing` would mix leaves of different shardings).

    Returns:
      A :class:`Placement`.

    Raises:
      ValueError: no devices in the mesh, ``data_axis`` not in the mesh, a batch that does
        not split evenly, parameters sharded over an axis the mesh lacks, a mesh over several
        processes without ``jax.distributed`` (each message names the argument and sizes).
      TypeError: ``shard_opt_state`` is not a bool, or ``mesh`` is not a mesh.
    """
    if shard_opt_state not in (True, False):
        raise TypeError(f"shard_opt_state must be True or False, got {shard_opt_state!r}.")
    if pack:
        raise ValueError(
            "pack=True cannot run on a mesh: packed buffers would mix parameters of different "
            "shardings; pass pack=None or False with mesh."
        )
    if not isinstance(data_axis, str):
        raise TypeError(f"data_axis must be a string (a mesh axis name), got {data_axis!r}.")
    mesh = make_mesh(mesh, data_axis)
    n = None if data is None else dataset_size(data)
    check_batch(batch_size, n, mesh, data_axis)
    p_sh = param_shardings(params, mesh)
    placed = jax.tree.map(_put, params, p_sh)
    shard_over = data_axis if shard_opt_state else None
    if opt_state is None:
        s_sh = state_shardings(optimizer, placed, mesh, shard_over=shard_over)
        opt_state = jax.jit(optimizer.init, out_shardings=s_sh)(placed)
    else:
        s_sh = state_shardings(optimizer, placed, mesh, shard_over=shard_over, state=opt_state)
        opt_state = jax.tree.map(_put, opt_state, s_sh)
    return Placement(
        params=placed,
        opt_state=opt_state,
        data=shard_data(data, mesh, data_axis),
        eval_data=shard_data(eval_data, mesh, data_axis),
        loss_fn=loss_fn if data is None else _split_batches(loss_fn, mesh, data_axis),
        optimizer=_keep_shardings(optimizer, p_sh, s_sh),
        mesh=mesh,
        param_shardings=p_sh,
        state_shardings=s_sh,
    )


# ----------------------------------------------------------------------------- one step


def mesh_step(
    step: Callable[..., tuple],
    optimizer: GradientTransformation,
    *,
    mesh: Mesh | str,
    data_axis: str = "data",
    shard_opt_state: bool = False,
    donate: bool = True,
) -> Callable[..., tuple]:
    """``step(params, opt_state, batch, **extra)`` (the plain step of :func:`gdopt.make_step`)
    compiled for ``mesh``: the batch split over ``data_axis``, the parameters and state kept
    on the shardings of the first call's arguments (replicated when they come unsharded;
    the state split over ``data_axis`` with ``shard_opt_state``).

    One compiled program per structure, shapes and shardings of the arguments; every call
    places its arguments where the program expects them (a no-op when they are already).
    With several processes that each drive several devices, every call waits for its
    result (programs with collectives dispatched without waiting hang under CPU gloo).
    """
    if shard_opt_state not in (True, False):
        raise TypeError(f"shard_opt_state must be True or False, got {shard_opt_state!r}.")
    mesh = make_mesh(mesh, data_axis)
    shard_over = data_axis if shard_opt_state else None
    size = _axis_size(mesh, data_axis)
    programs: dict[Any, Any] = {}

    def call(params, opt_state, batch, **extra):
        for path, x in jax.tree_util.tree_flatten_with_path(batch)[0]:
            if np.ndim(x) and np.shape(x)[0] % size:
                raise ValueError(
                    f"batch{key_path_str(path) if path else ''} has {np.shape(x)[0]} examples, "
                    f"not divisible by the size of the data axis {data_axis!r} ({size} devices)."
                )
        p_sh = param_shardings(params, mesh)
        s_sh = state_shardings(optimizer, params, mesh, shard_over=shard_over, state=opt_state)
        b_sh = jax.tree.map(lambda x: NamedSharding(mesh, _data_spec(x, mesh, data_axis)), batch)
        sig = (
            jax.tree.structure((params, opt_state, batch)),
            tuple(
                (np.shape(x), str(jnp.result_type(x)), str(s.spec))
                for x, s in zip(
                    jax.tree.leaves((params, opt_state, batch)),
                    jax.tree.leaves((p_sh, s_sh, b_sh)),
                    strict=True,
                )
            ),
            tuple(sorted(extra)),
        )
        program = programs.get(sig)
        if program is None:
            rep = NamedSharding(mesh, PartitionSpec())

            def body(p, s, b, kw):
                out = step(p, s, b, **kw)
                return (_constrain(out[0], p_sh), _constrain(out[1], s_sh), *out[2:])

            program = jax.jit(
                body,
                in_shardings=(p_sh, s_sh, b_sh, rep),
                donate_argnums=(0, 1) if donate else (),
                keep_unused=True,
            )
            programs[sig] = program
        args = (
            jax.tree.map(_put, params, p_sh),
            jax.tree.map(_put, opt_state, s_sh),
            jax.tree.map(_put, batch, b_sh),
        )
        out = program(*args, extra)
        if wait:
            jax.block_until_ready(out)
        return out

    # several processes with several devices each (CPU collectives over gloo): programs
    # dispatched without waiting hang every process (see docs/distributed.md), so each
    # call waits for its result before the next one is dispatched
    wait = jax.process_count() > 1 and jax.local_device_count() > 1
    return call


# ----------------------------------------------------------------------------- memory


def bytes_per_device(tree: PyTree) -> dict[int, int]:
    """Bytes each device holds for the arrays of ``tree`` (its addressable shards), by
    device id.

    >>> bytes_per_device({"w": jnp.zeros(4)})[jax.devices()[0].id]
    16
    """
    out: dict[int, int] = {}
    for x in jax.tree.leaves(tree):
        if not isinstance(x, jax.Array):
            continue
        for shard in x.addressable_shards:
            nbytes = int(np.prod(shard.data.shape)) * np.dtype(x.dtype).itemsize
            out[shard.device.id] = out.get(shard.device.id, 0) + nbytes
    return out


def memory_analysis(compiled: Any) -> dict[str, int]:
    """XLA's memory analysis of a compiled program, per device: the bytes of its arguments,
    outputs, temporaries and generated code (``compiled = jax.jit(f).lower(...).compile()``).

    >>> c = jax.jit(lambda x: x * 2).lower(jnp.zeros(4)).compile()
    >>> memory_analysis(c)["argument_bytes"]
    16
    """
    stats = compiled.memory_analysis()
    fields = {
        "argument_bytes": "argument_size_in_bytes",
        "output_bytes": "output_size_in_bytes",
        "temp_bytes": "temp_size_in_bytes",
        "alias_bytes": "alias_size_in_bytes",
        "code_bytes": "generated_code_size_in_bytes",
    }
    return {k: int(getattr(stats, v, 0) or 0) for k, v in fields.items()}
