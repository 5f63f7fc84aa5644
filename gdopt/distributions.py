"""A diagonal Gaussian parameterised by its mean and log standard deviation: optax's
``multi_normal`` (used by its examples of gradient estimators and evolution strategies).

The distribution is an object with the parameters it was made from (``params``), a
reparameterised ``sample`` (differentiable in ``loc`` and ``log_scale``) and ``log_prob``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from gdopt._numerics import promote

__all__ = ["MultiNormalDiagFromLogScale", "multi_normal"]


class MultiNormalDiagFromLogScale:
    """The Gaussian ``N(loc, diag(exp(log_scale)²))`` over arrays of the broadcast shape of
    ``loc`` and ``log_scale`` (optax's class of the same name).

    Args:
      loc: the mean ``μ``.
      log_scale: ``log σ``, the log standard deviation of each coordinate.

    >>> import jax.numpy as jnp
    >>> d = MultiNormalDiagFromLogScale(jnp.zeros(2), jnp.zeros(2))
    >>> round(float(d.log_prob(jnp.zeros(2))), 4)  # -log(2π) for two standard coordinates
    -1.8379
    """

    def __init__(self, loc: Any, log_scale: Any) -> None:
        loc, log_scale = promote(jnp.asarray(loc), jnp.asarray(log_scale))
        self._mean = loc
        self._log_scale = log_scale
        self._scale = jnp.exp(log_scale)
        self._param_shape: tuple[int, ...] = tuple(
            int(k) for k in jax.lax.broadcast_shapes(loc.shape, log_scale.shape)
        )

    def sample(self, shape: Sequence[int], key: jax.Array) -> jax.Array:
        """``shape + param_shape`` draws ``μ + σ ε``, ``ε ~ N(0, I)`` from
        ``jax.random.normal(key, ...)`` (optax's draws for the same key).

        >>> import jax, jax.numpy as jnp
        >>> d = multi_normal(jnp.ones(3), jnp.full(3, -30.0))
        >>> d.sample((2,), jax.random.PRNGKey(0)).round(4).tolist()
        [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
        """
        sample_shape: tuple[int, ...] = (*(int(k) for k in shape), *self._param_shape)
        eps = jax.random.normal(key, sample_shape)
        eps, scale = promote(eps, self._scale)
        out = eps * scale
        out, mean = promote(out, self._mean)
        return out + mean

    def log_prob(self, x: Any) -> jax.Array:
        """``log p(x)``, summed over the parameter axes (the leading axes of ``x`` are a batch):
        ``Σ_i -((x_i - μ_i) / σ_i)² / 2 - log σ_i - log(2π) / 2``.

        >>> import jax.numpy as jnp
        >>> d = multi_normal(jnp.zeros(1), jnp.log(jnp.array([2.0])))
        >>> round(float(d.log_prob(jnp.array([2.0]))), 4)  # -1/2 - log 2 - log(2π)/2
        -2.1121
        """
        x, mean = promote(jnp.asarray(x), self._mean)
        z = x - mean
        z, scale = promote(z, self._scale)
        z = z / scale
        z, log_scale = promote(z, self._log_scale)
        per_coordinate = -0.5 * z * z - log_scale - 0.5 * math.log(2 * math.pi)
        axes = tuple(range(-len(self._param_shape), 0))
        return jnp.sum(per_coordinate, axis=axes)

    @property
    def log_scale(self) -> jax.Array:
        """``log σ``, as given."""
        return self._log_scale

    @property
    def params(self) -> list[jax.Array]:
        """``[loc, log_scale]``, the arrays it was made from."""
        return [self._mean, self._log_scale]


def multi_normal(loc: Any, log_scale: Any) -> MultiNormalDiagFromLogScale:
    """The diagonal Gaussian ``N(loc, diag(exp(log_scale)²))`` (optax's ``multi_normal``).

    Args:
      loc: the mean.
      log_scale: the log standard deviation of each coordinate.

    Returns:
      A :class:`MultiNormalDiagFromLogScale` with ``sample(shape, key)``, ``log_prob(x)``,
      ``log_scale`` and ``params``.

    >>> import jax, jax.numpy as jnp
    >>> d = multi_normal(jnp.array([1.0, -1.0]), jnp.zeros(2))
    >>> d.sample((5,), jax.random.PRNGKey(0)).shape
    (5, 2)
    """
    return MultiNormalDiagFromLogScale(loc, log_scale)
