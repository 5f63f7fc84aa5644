"""Sign methods: signSGD, Signum and Lion, whose every coordinate moves by the learning rate.

Each optimizer here is a chain of transforms made a named optimizer by
:func:`gdopt.named_optimizer`: its hyperparameters live in its state (read them with
:func:`gdopt.get_hyperparams`, change them with :func:`gdopt.set_hyperparams` without
recompiling, vmap over them), and its state has optax's layout. Argument names and defaults
are those of the optax function of the same name.
"""

from __future__ import annotations

from typing import Any

from gdopt.base import Decay, GradientTransformation, LearningRate, NonNegative
from gdopt.combinators import chain
from gdopt.hyperparams import named_optimizer
from gdopt.transforms.moments import ema
from gdopt.transforms.normalization import scale_by_lion, scale_by_sign
from gdopt.transforms.regularization import add_decayed_weights
from gdopt.transforms.scaling import scale_by_learning_rate

__all__ = ["sign_sgd", "signum", "lion"]


@named_optimizer
def sign_sgd(learning_rate: LearningRate) -> GradientTransformation:
    """signSGD: step along the sign of the gradient (Bernstein et al., 2018).

    Update rule::

        p_t = p_{t-1} - α sign(g_t)

    Every coordinate moves by exactly ``α`` (or not at all where ``g = 0``); only one bit per
    coordinate is needed, which is what makes it attractive for compressed communication.

    Args:
      learning_rate: ``α`` > 0 (number, array or schedule).

    References:
      Bernstein, Wang, Azizzadenesheli & Anandkumar, "signSGD: Compressed Optimisation for
      Non-Convex Problems", ICML 2018, https://arxiv.org/abs/1802.04434.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.sign_sgd(0.1)
    >>> p = {"w": jnp.array([1.0, 1.0, 1.0])}
    >>> u, _ = opt.update({"w": jnp.array([3.0, -1e-3, 0.0])}, opt.init(p), p)
    >>> [round(x, 4) for x in u["w"].tolist()]
    [-0.1, 0.1, 0.0]
    """
    return chain(scale_by_sign(), scale_by_learning_rate(learning_rate))


@named_optimizer
def signum(
    learning_rate: LearningRate, beta: Decay = 0.9, accumulator_dtype: Any = None
) -> GradientTransformation:
    """Signum: signSGD with momentum (Bernstein et al., 2018).

    Update rule::

        m_t = β m_{t-1} + (1 - β) g_t
        p_t = p_{t-1} - α sign(m_t)

    Args:
      learning_rate: ``α`` > 0 (number, array or schedule).
      beta: the momentum ``β`` in [0, 1).
      accumulator_dtype: dtype of ``m`` (default: the params').

    References:
      Bernstein, Wang, Azizzadenesheli & Anandkumar, "signSGD: Compressed Optimisation for
      Non-Convex Problems", ICML 2018, Algorithm 1, https://arxiv.org/abs/1802.04434.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.signum(0.1, beta=0.5)
    >>> p = {"w": jnp.array(0.0)}
    >>> s = opt.init(p)
    >>> u1, s = opt.update({"w": jnp.array(2.0)}, s, p)   # m = 1
    >>> u2, s = opt.update({"w": jnp.array(-1.0)}, s, p)  # m = 0.5 - 0.5 = 0
    >>> u3, s = opt.update({"w": jnp.array(-1.0)}, s, p)  # m = -0.5
    >>> [round(float(u["w"]), 4) for u in (u1, u2, u3)]
    [-0.1, 0.0, 0.1]
    """
    return chain(
        # no debiasing: the sign of m_t does not depend on the positive factor 1 - β^t
        ema(beta, debias=False, accumulator_dtype=accumulator_dtype),
        scale_by_sign(),
        scale_by_learning_rate(learning_rate),
    )


@named_optimizer
def lion(
    learning_rate: LearningRate,
    b1: Decay = 0.9,
    b2: Decay = 0.99,
    mu_dtype: Any = None,
    weight_decay: NonNegative = 1e-3,
    mask: Any = None,
) -> GradientTransformation:
    """Lion: the sign of an interpolated momentum, with decoupled decay (Chen et al., 2023).

    Update rule (see :func:`gdopt.scale_by_lion`)::

        c_t = β1 m_{t-1} + (1 - β1) g_t
        p_t = p_{t-1} - α (sign(c_t) + λ p_{t-1})
        m_t = β2 m_{t-1} + (1 - β2) g_t

    Every coordinate moves by ``α`` per step, so Lion wants a learning rate 3-10x smaller
    than AdamW's and a correspondingly larger ``λ``.

    Args:
      learning_rate: ``α`` > 0 (number, array or schedule).
      b1, b2: ``β1, β2`` in [0, 1).
      mu_dtype: dtype of ``m`` (default: the params').
      weight_decay: ``λ`` >= 0 (number, array or schedule), multiplied by the learning rate
        (as ``weight_decay`` of the paper's code and of lion-pytorch's ``Lion``).
      mask: which parameters decay (a pytree of bools or a function of the params).

    References:
      Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023,
      https://arxiv.org/abs/2302.06675.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.lion(0.01, weight_decay=0.0)
    >>> p = {"w": jnp.array([1.0, 1.0])}
    >>> u, _ = opt.update({"w": jnp.array([0.3, -20.0])}, opt.init(p), p)
    >>> [round(x, 4) for x in u["w"].tolist()]
    [-0.01, 0.01]
    """
    return chain(
        scale_by_lion(b1, b2, mu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
