"""Packed execution: parameters and optimizer state in one contiguous buffer per dtype.

A model with thousands of small parameter arrays pays per-array costs at every step:
flattening the pytree, passing thousands of arrays into and out of the compiled step, one
small fused loop per array. Packing removes them: :func:`pack` copies the leaves of a pytree
into one flat buffer per dtype and records where each leaf lives in a static, hashable
:class:`PackSpec`; :func:`unpack` gives the pytree back as slices of those buffers (inside
``jit`` they are fused into their consumers or lowered to cheap slices).

Optimizers run on the packed buffers through :func:`packed_optimizer`:

* a **packable** optimizer (:func:`is_packable`: one whose update does not depend on how the
  parameters are split into arrays: coordinate-by-coordinate rules such as sgd, momentum,
  Adam, RMSprop, Lion, and reductions over all parameters such as global-norm clipping or
  Prodigy's sums) computes the same numbers on a flat buffer as leaf by leaf, so its state
  is created on the buffers directly (``state[0].mu`` is then a :class:`Packed` too);
* any other optimizer (per-array norms: LAMB, LARS, block RMS clipping, Muon, Adafactor;
  masks and partitions by leaf; per-array noise) never runs on the flat buffer: the buffers
  are unpacked, the optimizer runs leaf by leaf with its state kept per leaf, and the
  updates are packed again. Both give the same numbers; only speed differs.

Packability is a property every gdopt transformation carries and every combinator
propagates (a ``chain`` is packable when all its parts are); a transformation gdopt did not
build counts as not packable unless :func:`mark_packable` says otherwise.

What packing costs: XLA has no views of part of a buffer, so a leaf that feeds a matrix
product is copied out of its buffer in the forward pass, and the gradient is written into
the packed buffer after the backward pass. What it saves: per-array costs of the optimizer
step and of the compiled program's interface, and compile time.
:func:`layout_for` (used by :func:`gdopt.fit`) packs by default from
:data:`AUTO_PACK_MIN_LEAVES` arrays on; ``benchmarks/results`` has the measurements behind
that threshold.

>>> import gdopt, jax, jax.numpy as jnp
>>> from gdopt.packing import pack, unpack, packed_optimizer, update_and_apply
>>> params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
>>> loss = lambda p: jnp.sum((p["w"] - 2.0) ** 2) + jnp.sum((p["b"] + 1.0) ** 2)
>>> packed = pack(params)                     # one float32 buffer of 9 elements
>>> opt = packed_optimizer(gdopt.adam(0.1))   # elementwise: state lives on the buffer too
>>> state = opt.init(packed)
>>> @jax.jit
... def step(packed, state):
...     grads = jax.grad(lambda q: loss(unpack(q)))(packed)   # comes out packed
...     return update_and_apply(opt, grads, state, packed)
>>> for _ in range(300):
...     packed, state = step(packed, state)
>>> [round(x, 2) for x in unpack(packed)["b"].tolist()]
[-1.0, -1.0, -1.0]
"""

from __future__ import annotations

import dataclasses
import functools
import weakref
from collections.abc import Callable
from typing import Any

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np

from gdopt._traits import Traits, traits_of, with_traits
from gdopt.base import GradientTransformation, apply_updates
from gdopt.tree import check_same_structure, key_path_str, tree_all_finite

__all__ = [
    "PackSpec",
    "Packed",
    "pack",
    "unpack",
    "packed_optimizer",
    "update_and_apply",
    "check_elementwise",
    "is_packable",
    "mark_packable",
    "is_elementwise",
    "mark_elementwise",
    "pack_state",
    "unpack_state",
    "AUTO_PACK_MIN_LEAVES",
    "should_pack",
    "Layout",
    "layout_for",
]


# ----------------------------------------------------------------------------- the spec


@dataclasses.dataclass(frozen=True, eq=False)
class PackSpec:
    """Where each leaf of a packed pytree lives (static: hashable, safe as a jit constant).

    Attributes:
      treedef: the pytree structure of the original tree.
      dtypes: the dtype of each buffer (one buffer per distinct leaf dtype, in order of first
        appearance among the leaves).
      sizes: the number of elements of each buffer.
      slots: per leaf, in flattening order: ``(buffer index, offset, shape)``.
      paths: per leaf, its key path as a string (for messages; not part of equality).
    """

    treedef: Any
    dtypes: tuple[np.dtype, ...]
    sizes: tuple[int, ...]
    slots: tuple[tuple[int, int, tuple[int, ...]], ...]
    paths: tuple[str, ...] = dataclasses.field(default=(), compare=False)
    _groups: tuple[tuple[int, ...], ...] = dataclasses.field(init=False, repr=False)
    _key: tuple = dataclasses.field(init=False, repr=False)
    _hash: int = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        groups: list[list[int]] = [[] for _ in self.dtypes]
        for i, (b, _, _) in enumerate(self.slots):
            groups[b].append(i)
        object.__setattr__(self, "_groups", tuple(tuple(g) for g in groups))
        key = (self.treedef, self.dtypes, self.sizes, self.slots)
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_hash", hash(key))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, PackSpec) or self._hash != other._hash:
            return False
        return self._key == other._key

    @property
    def num_leaves(self) -> int:
        """Number of leaves of the original pytree."""
        return len(self.slots)

    @property
    def size(self) -> int:
        """Total number of elements over all buffers."""
        return int(sum(self.sizes))

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffers (in the dtypes they were packed with)."""
        return int(
            sum(n * np.dtype(d).itemsize for n, d in zip(self.sizes, self.dtypes, strict=True))
        )

    def __repr__(self) -> str:
        bufs = ", ".join(
            f"{np.dtype(d).name}[{n}]" for d, n in zip(self.dtypes, self.sizes, strict=True)
        )
        return f"PackSpec({self.num_leaves} leaves in {len(self.sizes)} buffer(s): {bufs})"


class Packed:
    """A pytree packed into one flat buffer per dtype, with its static :class:`PackSpec`.

    ``Packed`` is itself a pytree whose leaves are the buffers (the spec is static auxiliary
    data), so it passes through ``jax.jit``, ``jax.grad``, ``jax.vmap``, ``jax.tree.map`` and
    every gdopt transformation. The optimizer state that an elementwise optimizer builds from
    a ``Packed`` holds ``Packed`` moments with the same spec.

    Attributes:
      buffers: the flat arrays, one per dtype of the original leaves (a moment buffer may
        have another dtype, e.g. ``mu_dtype=jnp.bfloat16``).
      spec: where each leaf lives.
    """

    __slots__ = ("buffers", "spec")

    def __init__(self, buffers: Any, spec: PackSpec) -> None:
        self.buffers = tuple(buffers)
        self.spec = spec

    def unpack(self) -> Any:
        """The original pytree, each leaf a slice of a buffer (see :func:`unpack`)."""
        return unpack(self)

    def __repr__(self) -> str:
        bufs = ", ".join(
            f"{getattr(getattr(b, 'dtype', None), 'name', '?')}{list(np.shape(b))}"
            if hasattr(b, "shape")
            else repr(b)
            for b in self.buffers
        )
        return f"Packed({self.spec.num_leaves} leaves: {bufs})"


def _flatten_with_keys(p: Packed):
    keys = [jax.tree_util.DictKey(np.dtype(d).name) for d in p.spec.dtypes]
    if len(set(keys)) != len(keys) or len(keys) != len(p.buffers):
        keys = [jax.tree_util.SequenceKey(i) for i in range(len(p.buffers))]
    return list(zip(keys, p.buffers, strict=True)), p.spec


jax.tree_util.register_pytree_with_keys(
    Packed,
    _flatten_with_keys,
    lambda spec, buffers: Packed(buffers, spec),
    lambda p: (p.buffers, p.spec),
)


# ----------------------------------------------------------------------------- pack / unpack


def _is_packed(x: Any) -> bool:
    return isinstance(x, Packed)


_INTERNED: weakref.WeakValueDictionary[tuple, PackSpec] = weakref.WeakValueDictionary()


def _spec_of(tree: Any) -> tuple[PackSpec, list[jax.Array]]:
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    dtypes: list[np.dtype] = []
    sizes: list[int] = []
    slots = []
    arrays = []
    paths = []
    for path, x in flat:
        where = key_path_str(path)
        if isinstance(x, Packed):  # pragma: no cover - Packed is a pytree node, not a leaf
            raise TypeError(f"tree{where} is already packed.")
        try:
            a = jnp.asarray(x)
        except TypeError as e:
            raise TypeError(
                f"pack: the leaf at {where} is a {type(x).__name__}, not an array or a number; "
                "only arrays (and Python/NumPy numbers) can be packed."
            ) from e
        d = np.dtype(a.dtype)
        if d not in dtypes:
            dtypes.append(d)
            sizes.append(0)
        b = dtypes.index(d)
        slots.append((b, sizes[b], tuple(int(s) for s in a.shape)))
        sizes[b] += int(np.prod(a.shape, dtype=np.int64))
        arrays.append(a)
        paths.append(where)
    spec = PackSpec(treedef, tuple(dtypes), tuple(sizes), tuple(slots), tuple(paths))
    # Equal specs from separate pack() calls (params, then each gradient...) are made the
    # same object: jit compares the specs of its arguments at every call, and identity is
    # instant where comparing thousands of slots is not.
    return _INTERNED.setdefault(spec._key, spec), arrays


def _leaves_for(tree: Any, spec: PackSpec) -> list[jax.Array]:
    leaves, treedef = jax.tree.flatten(tree)
    if treedef != spec.treedef:
        reference = spec.treedef.unflatten([0] * spec.num_leaves)
        check_same_structure(tree, reference, ("tree", "spec"), check_shapes=False)
        raise ValueError(
            f"pack: the tree's structure {treedef} differs from the spec's {spec.treedef}."
        )
    out = []
    for x, (b, _, shape), path in zip(
        leaves, spec.slots, spec.paths or [""] * len(leaves), strict=True
    ):
        a = jnp.asarray(x)
        if tuple(a.shape) != shape:
            raise ValueError(
                f"pack: the leaf at {path or '?'} has shape {tuple(a.shape)} but the spec "
                f"has {shape}; pack a tree with exactly the shapes of the spec."
            )
        out.append(a.astype(spec.dtypes[b]))
    return out


def pack(tree: Any, spec: PackSpec | None = None) -> Packed:
    """Copy the leaves of ``tree`` into one flat buffer per dtype.

    Leaves are raveled (row-major) and laid out one after the other in flattening order,
    each dtype in its own buffer. ``None`` leaves are kept in the structure and hold no
    space; scalars take one element.

    Args:
      tree: a pytree of arrays or numbers (bfloat16, float32, mixed... any dtypes).
      spec: pack like an earlier :func:`pack` result (``other.spec``): the tree must have that
        structure and those shapes, and each leaf is cast to its buffer's dtype. Default:
        compute the spec from ``tree``.

    Returns:
      A :class:`Packed`: ``.buffers`` (the flat arrays) and ``.spec`` (static).

    Raises:
      TypeError: ``tree`` is already packed or holds a leaf that is not an array.
      ValueError: ``spec`` is given and the structure or a shape differs (naming the key path).

    >>> import jax.numpy as jnp
    >>> p = pack({"w": jnp.ones((2, 2)), "b": jnp.zeros(2), "h": jnp.ones(3, jnp.bfloat16)})
    >>> p.spec
    PackSpec(3 leaves in 2 buffer(s): float32[6], bfloat16[3])
    >>> p.buffers[0].tolist()    # "b" then "w": dict keys flatten in sorted order
    [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    """
    if isinstance(tree, Packed):
        raise TypeError("pack: the tree is already a Packed; unpack(...) it first.")
    if spec is None:
        spec, arrays = _spec_of(tree)
    else:
        if not isinstance(spec, PackSpec):
            raise TypeError(f"pack: spec must be a PackSpec (packed.spec), got {spec!r}.")
        arrays = _leaves_for(tree, spec)
    buffers = []
    for b, dtype in enumerate(spec.dtypes):
        parts = [arrays[i].astype(dtype) for i in spec._groups[b]]
        buffers.append(_join(parts, spec.sizes[b], dtype))
    return Packed(tuple(buffers), spec)


def _join(parts: list[jax.Array], size: int, dtype: Any) -> jax.Array:
    """The parts raveled and laid end to end in one buffer of ``size`` elements.

    Not ``jnp.concatenate`` of raveled parts: XLA:CPU fuses the ravel of a multi-dimensional
    part into the concatenation and recomputes the multi-dimensional index of every element,
    an order of magnitude slower than a copy (``benchmarks/results``). Runs of 1-D parts are
    concatenated, and each multi-dimensional part is raveled behind an
    ``optimization_barrier`` (a free bitcast) and written with ``dynamic_update_slice``.
    """
    if len(parts) == 1:
        return parts[0].reshape(-1)
    if all(p.ndim <= 1 for p in parts):
        return jnp.concatenate([p.reshape(-1) for p in parts])
    buf = jnp.zeros((size,), dtype)
    offset, run = 0, []

    def flush(buf: jax.Array, end: int) -> jax.Array:
        if not run:
            return buf
        piece = run[0] if len(run) == 1 else jnp.concatenate(run)
        return jax.lax.dynamic_update_slice(buf, piece, (end - piece.shape[0],))

    for part in parts:
        n = int(np.prod(part.shape, dtype=np.int64))
        if part.ndim <= 1:
            run.append(part.reshape(-1))
        else:
            buf = flush(buf, offset)
            run = []
            flat = jax.lax.optimization_barrier(part.reshape(-1))
            buf = jax.lax.dynamic_update_slice(buf, flat, (offset,))
        offset += n
    return flush(buf, offset)


def unpack(packed: Packed) -> Any:
    """The pytree that ``packed`` holds: each leaf a slice of its buffer, reshaped.

    Inside ``jax.jit`` the slices are views that XLA fuses into their consumers; the
    gradient of a function of ``unpack(packed)`` with respect to ``packed`` is a
    :class:`Packed` (the cotangents concatenated, one pass). Each leaf has its buffer's
    dtype (so ``unpack(state.mu)`` of a ``bfloat16`` moment gives ``bfloat16`` leaves).

    Args:
      packed: a :class:`Packed` from :func:`pack`, or one with buffers of the same lengths
        (gradients, optimizer moments, updates).

    Returns:
      A pytree with the structure and shapes of the tree that was packed.

    Raises:
      TypeError: ``packed`` is not a :class:`Packed`.
      ValueError: a buffer's length does not match the spec.

    >>> import jax.numpy as jnp
    >>> tree = {"w": jnp.arange(4.0).reshape(2, 2), "s": jnp.asarray(5.0)}
    >>> back = unpack(pack(tree))
    >>> back["w"].tolist(), back["s"].tolist()
    ([[0.0, 1.0], [2.0, 3.0]], 5.0)
    """
    if not isinstance(packed, Packed):
        raise TypeError(
            f"unpack expects a Packed (the result of gdopt.pack), got {type(packed).__name__}."
        )
    spec = packed.spec
    if len(packed.buffers) != len(spec.sizes):
        raise ValueError(
            f"unpack: the Packed holds {len(packed.buffers)} buffer(s) but its spec describes "
            f"{len(spec.sizes)}."
        )
    leaves: list[Any] = [None] * spec.num_leaves
    for b, buf in enumerate(packed.buffers):
        shape = tuple(np.shape(buf))
        if not shape or shape[-1] != spec.sizes[b]:
            raise ValueError(
                f"unpack: buffer {b} ({np.dtype(spec.dtypes[b]).name}) has shape "
                f"{shape}, the spec needs ({spec.sizes[b]},) (after any leading axes)."
            )
        lead = shape[:-1]  # a stack of packed vectors, e.g. L-BFGS's memory of m of them
        group = spec._groups[b]
        if len(group) == 1:
            pieces = [buf]
        else:
            cuts = [spec.slots[i][1] for i in group[1:]]
            pieces = jnp.split(buf, cuts, axis=-1)
        for i, piece in zip(group, pieces, strict=True):
            leaves[i] = piece.reshape(lead + spec.slots[i][2])
    return spec.treedef.unflatten(leaves)


# ----------------------------------------------------------------------------- the guard

# Primitives that act coordinate by coordinate (and broadcasts of scalars, checked apart).
_ELEMENTWISE_PRIMITIVES = frozenset(
    """abs acos acosh add and asin asinh atan atan2 atanh cbrt ceil clamp complex conj
    convert_element_type copy copy_p cos cosh digamma div eq erf erf_inv erfc exp exp2 expm1
    floor ge gt imag integer_pow is_finite le lgamma log log1p logistic lt max min mul ne neg
    nextafter not or polygamma pow real reduce_precision rem round rsqrt select_n sign sin sinh
    sqrt square stop_gradient sub tan tanh xor""".split()
)
# Primitives that only call other jaxprs (checked recursively).
_CALL_PRIMITIVES = frozenset(
    """jit pjit closed_call core_call custom_jvp_call custom_vjp_call custom_vjp_call_jaxpr
    checkpoint remat cond while""".split()
)


def _sub_jaxprs(params: dict) -> list[Any]:
    out = []
    for v in params.values():
        for x in v if isinstance(v, (tuple, list)) else (v,):
            if isinstance(x, jax.extend.core.ClosedJaxpr):
                out.append(x.jaxpr)
            elif isinstance(x, jax.extend.core.Jaxpr):
                out.append(x)
    return out


def _first_non_elementwise(jaxpr: Any) -> str | None:
    for eqn in jaxpr.eqns:
        avals = [v.aval for v in (*eqn.invars, *eqn.outvars)]
        touches = any(getattr(a, "ndim", 0) > 0 for a in avals)
        name = eqn.primitive.name
        subs = _sub_jaxprs(eqn.params)
        if subs:
            if touches and name not in _CALL_PRIMITIVES:
                return name
            for sub in subs:
                found = _first_non_elementwise(sub)
                if found is not None:
                    return found
        elif not touches:
            continue
        elif name == "broadcast_in_dim":
            src = eqn.invars[0].aval
            if src.ndim and tuple(src.shape) != tuple(eqn.outvars[0].aval.shape):
                return name
        elif name not in _ELEMENTWISE_PRIMITIVES:
            return name
    return None


def check_elementwise(
    transform: GradientTransformation, params: Packed, state: Any = None, **extra: Any
) -> None:
    """Check that ``transform``'s update only acts coordinate by coordinate on ``params``.

    Traces ``transform.update`` on the packed buffers (nothing is computed) and fails on the
    first operation that touches a buffer and is not elementwise: a reduction (per-leaf or
    global norms), reshape, slice, concatenation, dot, sort, scan or random draw. This is
    the test that :func:`packed_optimizer` applies to a transformation marked elementwise.

    Args:
      transform: the transformation.
      params: the packed parameters (their shapes and dtypes are what matters).
      state: its state for ``params`` (default: ``transform.init(params)``, traced).
      **extra: keyword arguments for ``update`` (e.g. ``value``).

    Raises:
      ValueError: naming the offending operation.

    >>> import gdopt, jax.numpy as jnp
    >>> check_elementwise(gdopt.adam(1e-3), pack({"w": jnp.ones(3)}))   # passes
    >>> def normalize(u, s, p=None, **kw):   # divides by a norm: not elementwise
    ...     return jax.tree.map(lambda x: x / jnp.linalg.norm(x), u), s
    >>> check_elementwise(gdopt.GradientTransformation(lambda p: (), normalize),
    ...                   pack({"w": jnp.ones(3)}))
    Traceback (most recent call last):
    ...
    ValueError: this transformation is not elementwise: its update applies `reduce_sum` ...
    """

    # functions among the extras (value_fn=...) are closed over, arrays are traced
    functions = {k: v for k, v in extra.items() if callable(v)}
    arrays = {k: v for k, v in extra.items() if k not in functions}

    def run(u, p, s, arrays):
        s = transform.init(p) if s is None else s
        return transform.update(u, s, p, **arrays, **functions)

    jaxpr = jax.make_jaxpr(run)(params, params, state, arrays)
    found = _first_non_elementwise(jaxpr.jaxpr)
    if found is not None:
        raise ValueError(
            f"this transformation is not elementwise: its update applies `{found}` to whole "
            "parameter buffers, so on a packed buffer it would mix parameters that are "
            "separate leaves. Run it leaf by leaf: packed_optimizer(opt, elementwise=False) "
            "(or do not mark it with mark_elementwise)."
        )


# ----------------------------------------------------------------------------- optimizers

_PACKED_ATTR = "__gdopt_packed_mode__"
_INNER_ATTR = "__gdopt_packed_inner__"


def is_packable(transform: GradientTransformation) -> bool:
    """Whether ``transform``'s update is independent of how the parameters are split into
    arrays, so it may run on packed buffers (see :mod:`gdopt._traits`).

    Coordinate-by-coordinate rules (sgd, Adam, RMSprop, Lion...) and reductions over all
    parameters (global-norm clipping, Prodigy's sums) are; per-array norms, masks and
    partitions by leaf, per-array random draws and shape-dependent rules are not. The
    property composes: a ``chain`` is packable when all its parts are.

    >>> import gdopt
    >>> is_packable(gdopt.chain(gdopt.clip_by_global_norm(1.0), gdopt.adam(1e-3)))
    True
    >>> is_packable(gdopt.lamb(1e-3)), is_packable(gdopt.adamw(1e-3, mask=lambda p: p))
    (False, False)
    """
    return traits_of(transform).packable


def mark_packable(transform: GradientTransformation) -> GradientTransformation:
    """Declare that ``transform`` (one gdopt did not build) is packable.

    Only correct when its update computes the same numbers on parameters packed into one
    flat buffer per dtype as leaf by leaf: coordinate-by-coordinate maps and reductions over
    all parameters. gdopt's own transformations already carry the property.

    >>> import gdopt, jax.numpy as jnp
    >>> t = gdopt.GradientTransformation(lambda p: (), lambda u, s, p=None, **kw: (u, s))
    >>> is_packable(t), is_packable(mark_packable(t))
    (False, True)
    """
    if not (hasattr(transform, "init") and hasattr(transform, "update")):
        raise TypeError(
            f"mark_packable expects a GradientTransformation, got {type(transform).__name__}."
        )
    traits = traits_of(transform)
    return with_traits(transform, Traits(packable=True, key=traits.key, factory=traits.factory))


def is_elementwise(transform: GradientTransformation) -> bool:
    """The former name of :func:`is_packable` (kept for compatibility)."""
    return is_packable(transform)


def mark_elementwise(transform: GradientTransformation) -> GradientTransformation:
    """The former name of :func:`mark_packable` (kept for compatibility)."""
    return mark_packable(transform)


def _require_packed(x: Any, name: str, spec: PackSpec | None = None) -> None:
    if not isinstance(x, Packed):
        raise TypeError(
            f"a packed optimizer needs {name} as a Packed (gdopt.pack(tree), or the gradient "
            f"of a function of gdopt.unpack(packed)), got {type(x).__name__}."
        )
    if spec is not None and x.spec.sizes != spec.sizes:
        raise ValueError(
            f"{name} is packed with buffer sizes {x.spec.sizes} but the parameters with "
            f"{spec.sizes}; pack both from the same tree (pack(tree, spec=params.spec))."
        )


def _signature(tree: Any) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((np.shape(x), str(getattr(x, "dtype", type(x)))) for x in leaves)


def packed_optimizer(
    opt: GradientTransformation, *, elementwise: bool | None = None
) -> GradientTransformation:
    """Run ``opt`` on packed parameters: ``init(Packed)``, ``update(Packed, state, Packed)``.

    The returned transformation takes and returns :class:`Packed` updates. How ``opt`` runs:

    * elementwise (``elementwise=True``, or ``None`` and ``opt`` carries gdopt's elementwise
      marker): directly on the buffers; its state is created on the buffers, so every moment
      is one contiguous buffer per dtype. The marker is verified once per input signature with
      :func:`check_elementwise`.
    * otherwise: the updates and parameters are unpacked, ``opt`` runs leaf by leaf with a
      per-leaf state, and the updates are packed again (same numbers; per-leaf cost).

    Args:
      opt: any gradient transformation.
      elementwise: force the mode; ``None`` decides from the marker.

    Returns:
      A transformation for packed parameters (itself marked elementwise in the first mode).
      Wrapping it again returns it unchanged.

    >>> import gdopt, jax.numpy as jnp
    >>> params = pack({"w": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)})
    >>> opt = packed_optimizer(gdopt.sgd(0.1, momentum=0.9))
    >>> state = opt.init(params)
    >>> updates, state = opt.update(params, state, params)   # gradient = params
    >>> [round(x, 3) for x in unpack(updates)["w"].tolist()]
    [-0.1, 0.2]
    >>> type(state.inner_state[0].trace).__name__            # the momentum is packed too
    'Packed'
    """
    if not (hasattr(opt, "init") and hasattr(opt, "update")):
        raise TypeError(
            f"packed_optimizer expects a GradientTransformation, got {type(opt).__name__}."
        )
    mode = getattr(opt.update, _PACKED_ATTR, None)
    if mode is not None:
        if elementwise is None or bool(elementwise) == (mode == "flat"):
            return opt
        opt = getattr(opt.update, _INNER_ATTR)
    flat = is_packable(opt) if elementwise is None else bool(elementwise)
    if flat:

        def init(params):
            _require_packed(params, "params")
            return opt.init(params)

        def update(updates, state, params=None, **extra):
            _require_packed(updates, "updates")
            if params is not None:
                _require_packed(params, "params", updates.spec)
            return opt.update(updates, state, params, **extra)

        out = with_traits(GradientTransformation(init, update), Traits(packable=True))
        setattr(out.update, _PACKED_ATTR, "flat")
        setattr(out.update, _INNER_ATTR, opt)
        return out

    def init_leafwise(params):
        _require_packed(params, "params")
        return opt.init(unpack(params))

    def update_leafwise(updates, state, params=None, **extra):
        _require_packed(updates, "updates")
        if params is not None:
            _require_packed(params, "params", updates.spec)
        tree = unpack(updates)
        extra = _leafwise_extras(extra, updates.spec)
        new, state = opt.update(tree, state, None if params is None else unpack(params), **extra)
        return pack(new, updates.spec), state

    setattr(update_leafwise, _PACKED_ATTR, "leafwise")
    setattr(update_leafwise, _INNER_ATTR, opt)
    return GradientTransformation(init_leafwise, update_leafwise)


def _leafwise_extras(extra: dict, spec: PackSpec) -> dict:
    """The keyword extras of ``update`` as an optimizer run leaf by leaf sees them: packed
    values (``grad=``) unpacked, and the objective (``value_fn=``, ``obj_fn=``, a function of
    the packed parameters) called on the parameters it is given, packed with ``spec``."""
    out = {}
    for name, value in extra.items():
        if isinstance(value, Packed):
            value = unpack(value)
        elif name in ("value_fn", "obj_fn") and callable(value):
            value = _packing_objective(value, spec)
        out[name] = value
    return out


def _packing_objective(fn: Callable[..., Any], spec: PackSpec) -> Callable[..., Any]:
    """``fn`` of packed parameters as a function of the pytree (signature kept: the line
    searches forward the extras that ``fn`` names)."""

    @functools.wraps(fn)
    def objective(params: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(params, Packed):
            params = pack(params, spec)
        return fn(params, *args, **kwargs)

    return objective


# ----------------------------------------------------------------------------- one step


def update_and_apply(
    opt: GradientTransformation, grads: Any, state: Any, params: Any, **extra: Any
) -> tuple[Any, Any]:
    """One optimizer step: ``updates = opt.update(grads, state, params)``, then apply them.

    For packed parameters this is the step of ``packed_optimizer(opt)`` (with the state from
    ``packed_optimizer(opt).init(params)``): directly on the buffers for an elementwise
    ``opt``, leaf by leaf otherwise. For an unpacked pytree it is ``opt.update`` followed by
    :func:`gdopt.apply_updates`. Under ``jax.jit`` the update and the parameter update fuse
    into one program; donate the parameters and the state so both are updated in place.

    Args:
      opt: a gradient transformation (or a :func:`packed_optimizer` of one).
      grads: the gradient (a :class:`Packed` with the params' spec when params are packed).
      state: the optimizer state.
      params: the parameters (packed or not).
      **extra: keyword arguments passed to ``opt.update`` (``value=loss``...).

    Returns:
      ``(new_params, new_state)``.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.sgd(0.5)
    >>> p, s = update_and_apply(opt, {"w": jnp.array(2.0)}, opt.init({"w": 0.0}),
    ...                         {"w": jnp.array(1.0)})
    >>> float(p["w"])
    0.0
    """
    if isinstance(params, Packed):
        opt = packed_optimizer(opt)
    updates, state = opt.update(grads, state, params, **extra)
    return apply_updates(params, updates), state


# ----------------------------------------------------------------------------- states


def unpack_state(state: Any) -> Any:
    """``state`` with every :class:`Packed` in it unpacked (moments per parameter again).

    The state of a :func:`packed_optimizer` of an elementwise optimizer holds its moments as
    :class:`Packed` buffers; this gives the state that ``opt.init`` builds on the unpacked
    parameters (same structure, same numbers), e.g. to save it or to continue without packing.

    >>> import gdopt, jax.numpy as jnp
    >>> params = {"w": jnp.ones(2), "b": jnp.zeros(())}
    >>> popt = packed_optimizer(gdopt.adam(0.1))
    >>> state = unpack_state(popt.init(pack(params)))
    >>> jax.tree.structure(state) == jax.tree.structure(gdopt.adam(0.1).init(params))
    True
    """
    return jax.tree.map(
        lambda x: unpack(x) if isinstance(x, Packed) else x, state, is_leaf=_is_packed
    )


def pack_state(state: Any, like: Any) -> Any:
    """Pack an optimizer state built on unpacked parameters, in the layout of ``like``.

    Args:
      state: a state from ``opt.init(params)`` (or from :func:`unpack_state`).
      like: the packed state it should become, e.g. ``packed_optimizer(opt).init(pack(params))``
        or its ``jax.eval_shape``: wherever ``like`` holds a :class:`Packed`, the
        parameter-shaped subtree of ``state`` is packed with that spec and those dtypes.

    Returns:
      A state for the :func:`packed_optimizer` (same numbers).

    Raises:
      ValueError: the structures differ (the key path is named).

    >>> import gdopt, jax.numpy as jnp
    >>> params = {"w": jnp.ones(2), "b": jnp.zeros(())}
    >>> opt, popt = gdopt.adam(0.1), packed_optimizer(gdopt.adam(0.1))
    >>> packed_state = pack_state(opt.init(params), popt.init(pack(params)))
    >>> type(packed_state.inner_state[0].mu).__name__
    'Packed'
    """

    def convert(target: Any, sub: Any) -> Any:
        if not isinstance(target, Packed):
            return sub
        spec = target.spec
        lead = tuple(np.shape(target.buffers[0]))[:-1] if target.buffers else ()
        if lead:  # a stack of packed vectors (L-BFGS's memory): concatenate along the last axis
            leaves = jax.tree.leaves(sub)
            check_same_structure(
                sub, spec.treedef.unflatten([0] * spec.num_leaves), ("state", "spec"), False
            )
            buffers = []
            for b, buf in enumerate(target.buffers):
                parts = [
                    jnp.reshape(leaves[i], lead + (-1,)).astype(buf.dtype) for i in spec._groups[b]
                ]
                buffers.append(jnp.concatenate(parts, axis=-1))
            return Packed(tuple(buffers), spec)
        leaves = _leaves_for(sub, spec)
        buffers = []
        for b, buf in enumerate(target.buffers):
            parts = [leaves[i].astype(buf.dtype) for i in spec._groups[b]]
            buffers.append(_join(parts, spec.sizes[b], buf.dtype))
        return Packed(tuple(buffers), spec)

    try:
        return jax.tree.map(convert, like, state, is_leaf=_is_packed)
    except ValueError as e:
        raise ValueError(
            f"pack_state: the state does not have the structure of the packed state: {e}"
        ) from None


# ----------------------------------------------------------------------------- layouts

#: :func:`layout_for` packs by default from this many parameter arrays on.
AUTO_PACK_MIN_LEAVES = 64


def should_pack(params: Any, optimizer: GradientTransformation) -> bool:
    """Whether training packs by default: a packable optimizer and at least
    :data:`AUTO_PACK_MIN_LEAVES` parameter arrays.

    Packing replaces the optimizer's per-array loops by one loop per buffer, but costs a copy
    of each matrix out of its buffer in the forward pass and one write of each gradient into
    the packed gradient: it pays off for models with many small arrays, not for a few large
    ones (``benchmarks/results/train_throughput.md``).

    >>> import gdopt, jax.numpy as jnp
    >>> should_pack([jnp.zeros(3)] * 100, gdopt.adam(1e-3)), should_pack([jnp.zeros(3)] * 4, gdopt.adam(1e-3))
    (True, False)
    >>> should_pack([jnp.zeros(3)] * 100, gdopt.lamb(1e-3))   # per-array trust ratios
    False
    """
    return is_packable(optimizer) and len(jax.tree.leaves(params)) >= AUTO_PACK_MIN_LEAVES


class Layout:
    """How a training loop holds the parameters: as the user's pytree, or packed.

    The engine sees only this interface, whichever way the parameters are laid out:
    ``carry`` turns the user's parameters into what the compiled loop carries and
    ``restore`` turns them back; ``loss`` and ``value_and_grad`` wrap a loss of the user's
    pytree into a loss of the carried parameters; ``optimizer`` is the optimizer to run on
    them, ``carry_state``/``restore_state`` convert an optimizer state, and ``all_finite``
    checks the carried parameters in as few reductions as possible.

    Attributes:
      packed: whether the parameters are carried packed.
    """

    packed = False

    def carry(self, params: Any) -> Any:
        """The user's parameters as the loop carries them."""
        return params

    def restore(self, params: Any) -> Any:
        """Carried parameters back as the user's pytree."""
        return params

    def loss(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn(params, batch)`` of the user's pytree as a function of carried parameters."""
        return fn

    def value_and_grad(self, fn: Callable[..., Any], has_aux: bool = False) -> Callable[..., Any]:
        """``jax.value_and_grad`` of ``fn`` with respect to carried parameters."""
        return jax.value_and_grad(fn, has_aux=has_aux)

    def optimizer(self, opt: GradientTransformation) -> GradientTransformation:
        """The transformation that updates carried parameters."""
        return opt

    def init_state(self, opt: GradientTransformation, params: Any) -> Any:
        """The initial optimizer state for the user's ``params``, in the carried layout."""
        return opt.init(params)

    def carry_state(self, opt: GradientTransformation, params: Any, opt_state: Any) -> Any:
        """An optimizer state of the user's parameters, for carried ``params``."""
        del opt, params
        return opt_state

    def restore_state(self, opt_state: Any) -> Any:
        """A carried optimizer state back in the layout ``opt.init`` gives the user."""
        return opt_state

    def all_finite(self, params: Any) -> jax.Array:
        """Whether every carried parameter is finite (a scalar bool).

        The leaves are packed first (one copy): one reduction per dtype instead of one per
        leaf, which on XLA:CPU costs both compile time and run time for models with many
        arrays.
        """
        return tree_all_finite(pack(params))


class _PackedLayout(Layout):
    packed = True

    def carry(self, params: Any) -> Packed:
        return pack(params)

    def restore(self, params: Any) -> Any:
        return unpack(params)

    def loss(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return lambda params, *args: fn(unpack(params), *args)

    def value_and_grad(self, fn: Callable[..., Any], has_aux: bool = False) -> Callable[..., Any]:
        # The gradient is taken with respect to the unpacked leaves and then packed, not by
        # differentiating through ``unpack``, whose transpose is a concatenation that XLA:CPU
        # runs much slower than ``pack``'s copies when the leaves are matrices.
        grad_fn = jax.value_and_grad(fn, has_aux=has_aux)

        def packed_grad(params: Packed, *args: Any):
            out, grads = grad_fn(unpack(params), *args)
            return out, pack(grads, params.spec)

        return packed_grad

    def optimizer(self, opt: GradientTransformation) -> GradientTransformation:
        return packed_optimizer(opt)

    def init_state(self, opt: GradientTransformation, params: Any) -> Any:
        return packed_optimizer(opt).init(pack(params))

    def carry_state(self, opt: GradientTransformation, params: Any, opt_state: Any) -> Any:
        if _is_carried(opt_state):
            return opt_state
        return pack_state(opt_state, jax.eval_shape(packed_optimizer(opt).init, params))

    def restore_state(self, opt_state: Any) -> Any:
        return unpack_state(opt_state)

    def all_finite(self, params: Any) -> jax.Array:
        return tree_all_finite(params)


def _is_carried(opt_state: Any) -> bool:
    """Whether a state already holds packed buffers (made by ``init_state``)."""
    return any(isinstance(x, Packed) for x in jax.tree.leaves(opt_state, is_leaf=_is_packed))


TREE = Layout()
PACKED = _PackedLayout()


def layout_for(params: Any, optimizer: GradientTransformation, pack: bool | None = None) -> Layout:
    """The layout a training loop should use: packed when ``pack`` says so, or by default
    when :func:`should_pack` does.

    >>> import gdopt, jax.numpy as jnp
    >>> layout_for([jnp.zeros(3)] * 100, gdopt.adam(1e-3)).packed
    True
    """
    if pack not in (None, True, False):
        raise TypeError(f"pack must be True, False or None (decide), got {pack!r}.")
    packed = should_pack(params, optimizer) if pack is None else pack
    return PACKED if packed else TREE
