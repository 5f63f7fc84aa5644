"""Regularisation and noise: decoupled weight decay, gradient noise, gradient centralisation."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdopt import _numerics as num
from gdopt._numerics import as_float32, safe_increment, tree_map
from gdopt._traits import transform
from gdopt._validation import need_params
from gdopt.base import (
    GradientTransformation,
    NonNegativeValue,
    RealValue,
    init_empty_state,
)
from gdopt.combinators import masked

__all__ = ["add_decayed_weights", "add_noise", "AddNoiseState", "centralize"]


def _unmasked(arguments: dict) -> bool:
    """Packable when no mask selects leaves (a mask makes the rule depend on the leaf)."""
    mask = arguments.get("mask")
    return mask is None or isinstance(mask, bool)


@transform(packable=_unmasked)
def add_decayed_weights(weight_decay: RealValue = 0.0, mask: Any = None) -> GradientTransformation:
    """Decoupled weight decay (Loshchilov & Hutter, 2019): ``u <- u + λ p``.

    Placed before ``scale_by_learning_rate`` this gives AdamW's ``p <- p - α (u + λ p)``.
    As a building block ``λ`` may be any real number (Fromage adds a negative multiple of
    the parameters); the named optimizers ask for ``λ >= 0``.

    Args:
      weight_decay: ``λ`` (a number, an array or a schedule's value).
      mask: which parameters decay: a pytree of bools with the params' structure (or a
        prefix of it), a function ``params -> such a tree``, or ``None`` for all. With a
        mask the transformation is ``masked(add_decayed_weights(λ), mask)``, so its state is
        a :class:`~gdopt.MaskedState`, as optax's.

    References:
      Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019,
      https://arxiv.org/abs/1711.05101.

    >>> t = add_decayed_weights(0.1, mask={"w": True, "b": False})
    >>> p = {"w": jnp.array(2.0), "b": jnp.array(2.0)}
    >>> u, _ = t.update({"w": jnp.array(0.0), "b": jnp.array(0.0)}, t.init(p), p)
    >>> (round(u["w"].item(), 6), u["b"].item())
    (0.2, 0.0)
    """

    def update(updates, state, params=None, **extra):
        del extra
        need_params(params, "add_decayed_weights", "weight decay is proportional to them")
        decayed = tree_map(
            lambda u, p: num.add(u, num.mul(weight_decay, p)).astype(u.dtype), updates, params
        )
        return decayed, state

    tx = GradientTransformation(init_empty_state, update)
    return tx if mask is None else masked(tx, mask)


# ----------------------------------------------------------------------------- noise


class AddNoiseState(NamedTuple):
    """Step counter ``t`` and the PRNG key for the next noise sample."""

    count: jax.Array
    rng_key: jax.Array


def _as_key(key: Any) -> jax.Array:
    """A PRNG key from an int seed (a raw ``uint32[2]`` key) or a key (kept as given)."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        return jax.random.PRNGKey(int(key))
    arr = np.asarray(key)
    if arr.dtype == np.uint32 and arr.shape == (2,):
        return jnp.asarray(arr)
    raise TypeError(
        f"key must be an int seed or a PRNG key (jax.random.key(0) or jax.random.PRNGKey(0)), "
        f"got {key!r}."
    )


@transform(packable=False)
def add_noise(
    eta: NonNegativeValue,
    gamma: NonNegativeValue,
    key: Any = None,
    *,
    seed: int | None = None,
) -> GradientTransformation:
    """Add annealed Gaussian noise to the updates (Neelakantan et al., 2015).

    Update rule (``t`` starts at 1)::

        σ_t² = η / t^γ
        u_t = g_t + σ_t · N(0, I)

    The PRNG key lives in the state and is split at every step, so runs are reproducible and
    a jitted step draws fresh noise each time. Each leaf gets its own draw (the key is split
    into one key per leaf, as optax does), so the noise depends on how the parameters are
    split into arrays: not packable.

    Args:
      eta: ``η`` >= 0, the initial variance.
      gamma: ``γ`` >= 0, the annealing exponent (the paper uses 0.55).
      key: an int seed or a PRNG key (default seed 0). An int seed becomes a raw
        ``uint32[2]`` key (``jax.random.PRNGKey(seed)``: the bits of optax's typed
        ``jax.random.key(seed)``, so the same draws); a key is kept as given.
      seed: an int seed, accepted for code written against optax's older signature; give
        ``key`` or ``seed``, not both.

    Returns:
      A transformation whose state is an :class:`AddNoiseState`.

    References:
      Neelakantan et al., "Adding Gradient Noise Improves Learning for Very Deep Networks",
      2015, https://arxiv.org/abs/1511.06807.

    >>> import jax.numpy as jnp
    >>> t = add_noise(eta=0.0, gamma=0.55, key=0)          # no variance: no noise
    >>> u, s = t.update({"w": jnp.array([1.0, 2.0])}, t.init({"w": jnp.zeros(2)}))
    >>> (u["w"].tolist(), int(s.count))
    ([1.0, 2.0], 1)
    """
    if seed is not None and key is not None:
        raise ValueError("add_noise takes key or seed, not both; pass key=... only.")
    start = _as_key(0 if key is None and seed is None else (key if key is not None else seed))

    def init(params):
        del params
        return AddNoiseState(count=jnp.zeros([], jnp.int32), rng_key=start)

    def update(updates, state, params=None, **extra):
        del params, extra
        count = safe_increment(state.count)
        std = jnp.sqrt(num.div(eta, jnp.power(*num.promote(as_float32(count), gamma))))
        next_key, sample_key = jax.random.split(state.rng_key)
        leaves, treedef = jax.tree.flatten(updates)
        keys = jax.random.split(sample_key, len(leaves))
        noisy = [
            num.add(
                g, num.mul(std, jax.random.normal(k, jnp.shape(g), jnp.asarray(g).dtype))
            ).astype(g.dtype)
            for g, k in zip(leaves, keys, strict=True)
        ]
        return treedef.unflatten(noisy), AddNoiseState(count=count, rng_key=next_key)

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- centralize


@transform(packable=False)
def centralize(axis: int | tuple[int, ...] | None = None) -> GradientTransformation:
    """Gradient centralization (Yong et al., 2020): remove the mean of each unit's gradient.

    Update rule, for every leaf with at least 2 dimensions (vectors and scalars pass
    unchanged)::

        u = g - mean(g over `axis`)

    With ``axis=None`` the mean is over all axes but the first (one unit per leading index:
    PyTorch's ``(out, in, ...)`` layout, and optax's rule). For JAX ``(in, out)`` dense
    kernels, where a unit is a column, pass ``axis=0``; for ``HWIO`` convolutions
    ``axis=(0, 1, 2)``. The means are per array (and depend on its shape): not packable.

    Args:
      axis: the axes to average over (inside one unit), or ``None`` for the rule above.

    Returns:
      A stateless transformation.

    References:
      Yong, Huang, Hua & Zhang, "Gradient Centralization: A New Optimization Technique for
      Deep Neural Networks", ECCV 2020, https://arxiv.org/abs/2004.01461.

    >>> import jax.numpy as jnp
    >>> t = centralize()
    >>> u, _ = t.update({"w": jnp.array([[1.0, 2.0, 3.0], [4.0, 4.0, 4.0]])}, t.init(None))
    >>> u["w"].tolist()
    [[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    """

    def leaf(g):
        if g.ndim < 2:
            return g
        axes = tuple(range(1, g.ndim)) if axis is None else axis
        return (g - jnp.mean(g, axis=axes, keepdims=True)).astype(g.dtype)

    def update(updates, state, params=None, **extra):
        del params, extra
        return tree_map(leaf, updates), state

    return GradientTransformation(init_empty_state, update)
