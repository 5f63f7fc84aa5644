"""The seed optimizers: gradient descent (batch, stochastic, mini-batch), momentum, Adam,
AdamW, RMSprop and AdaGrad.

Each is a thin chain of public transforms wrapped by :func:`gdopt.with_hyperparams`, so its
numeric hyperparameters live in its state (read them with :func:`gdopt.get_hyperparams`,
change them with :func:`gdopt.set_hyperparams` without recompiling, vmap over them). Argument
names and defaults are those of the optax function of the same name.
"""

from __future__ import annotations

from typing import Any

from gdopt.base import (
    GradientTransformation,
    ScalarOrSchedule,
    check_decay,
    check_learning_rate,
    check_nonnegative,
    identity,
)
from gdopt.combinators import chain
from gdopt.transforms._core import (
    _elementwise,
    add_decayed_weights,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
    scale_by_rss,
    scale_by_stddev,
    trace,
)
from gdopt.wrappers import with_hyperparams

__all__ = ["sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad", "named_optimizer"]


def named_optimizer(build, **hyperparams: Any) -> GradientTransformation:
    """Wrap ``build`` so the non-``None`` ``hyperparams`` live in the state.

    ``None`` values (an absent ``momentum``, say) are passed to ``build`` as ``None`` and are
    not stored. This is how every named optimizer in gdopt is built.
    """
    static = {k: v for k, v in hyperparams.items() if v is None}
    dynamic = {k: v for k, v in hyperparams.items() if v is not None}
    return with_hyperparams(lambda **values: build(**static, **values), dynamic)


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: float | None = None,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
) -> GradientTransformation:
    """Gradient descent, optionally with (Nesterov) momentum.

    It is batch gradient descent when each gradient comes from the whole dataset, stochastic
    gradient descent when it comes from one example and mini-batch SGD otherwise: the rule is
    the same, the data pipeline decides (see :func:`gdopt.fit`'s ``batch_size``).

    Update rule::

        p_t = p_{t-1} - α g_t                           (momentum=None)
        m_t = g_t + β m_{t-1};  p_t = p_{t-1} - α m_t   (heavy ball, Polyak 1964)
        p_t = p_{t-1} - α (g_t + β m_t)                 (nesterov=True)

    Args:
      learning_rate: ``α`` > 0: a number, an array or a schedule.
      momentum: ``β`` in [0, 1), or ``None`` for plain gradient descent.
      nesterov: Nesterov momentum (Sutskever et al., 2013).
      accumulator_dtype: dtype of the momentum buffer (default: the params').

    References:
      Robbins & Monro, "A Stochastic Approximation Method", 1951. Polyak, 1964.
      Sutskever, Martens, Dahl & Hinton, ICML 2013.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum((p["w"] - 3.0) ** 2)
    >>> opt = gdopt.sgd(0.1, momentum=0.9)
    >>> params = {"w": jnp.zeros(2)}
    >>> state = opt.init(params)
    >>> for _ in range(200):
    ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
    ...     params = gdopt.apply_updates(params, updates)
    >>> [round(x, 4) for x in params["w"].tolist()]
    [3.0, 3.0]
    """
    check_learning_rate(learning_rate)
    if momentum is not None:
        check_decay("momentum", momentum)

    def build(learning_rate, momentum):
        return chain(
            trace(momentum, nesterov, accumulator_dtype) if momentum is not None else identity(),
            scale_by_learning_rate(learning_rate),
        )

    return _elementwise(named_optimizer(build, learning_rate=learning_rate, momentum=momentum))


def momentum(
    learning_rate: ScalarOrSchedule, momentum: float = 0.9, nesterov: bool = False
) -> GradientTransformation:
    """SGD with heavy-ball momentum: ``sgd(learning_rate, momentum, nesterov)``.

    Update rule::

        m_t = g_t + β m_{t-1};  p_t = p_{t-1} - α m_t            (heavy ball)
        p_t = p_{t-1} - α (g_t + β m_t)                          (nesterov=True)

    Args:
      learning_rate: ``α`` > 0 (number, array or schedule).
      momentum: ``β`` in [0, 1).
      nesterov: Nesterov's look-ahead form.

    References:
      Polyak, "Some methods of speeding up the convergence of iteration methods", USSR
      Computational Mathematics and Mathematical Physics 4(5), 1964. Sutskever, Martens, Dahl
      & Hinton, "On the importance of initialization and momentum in deep learning", ICML 2013.

    >>> import gdopt
    >>> round(gdopt.get_hyperparams(gdopt.momentum(0.1).init({"w": 0.0}))["momentum"].item(), 6)
    0.9
    """
    return sgd(learning_rate, momentum=momentum, nesterov=nesterov)


def adam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """Adam (Kingma & Ba, 2015).

    Update rule (``t`` starts at 1)::

        m_t = β1 m_{t-1} + (1 - β1) g_t
        v_t = β2 v_{t-1} + (1 - β2) g_t²
        p_t = p_{t-1} - α (m_t / (1 - β1^t)) / (sqrt(v_t / (1 - β2^t) + ε_root) + ε)

    Args:
      learning_rate: ``α`` > 0 (number, array or schedule).
      b1, b2: ``β1, β2`` in [0, 1).
      eps: ``ε`` >= 0, outside the square root.
      eps_root: ``ε_root`` >= 0, inside the square root.
      mu_dtype, nu_dtype: dtypes of the moments (``jnp.bfloat16`` halves state memory).
      nesterov: NAdam's Nesterov momentum (Dozat, 2016).

    References:
      Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
      https://arxiv.org/abs/1412.6980.

    >>> import gdopt, jax, jax.numpy as jnp
    >>> loss = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
    >>> opt = gdopt.adam(0.05)
    >>> params = {"w": jnp.zeros(3)}
    >>> state = opt.init(params)
    >>> for _ in range(500):
    ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
    ...     params = gdopt.apply_updates(params, updates)
    >>> bool(jnp.allclose(params["w"], 1.0, atol=1e-3))
    True
    """
    check_learning_rate(learning_rate)

    def build(learning_rate, b1, b2, eps, eps_root):
        return chain(
            scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype),
            scale_by_learning_rate(learning_rate),
        )

    scale_by_adam(b1, b2, eps, eps_root)  # validates the concrete values now
    return _elementwise(
        named_optimizer(
            build, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root
        )
    )


def adamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Any = None,
    *,
    nesterov: bool = False,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

    Update rule: Adam's direction ``d_t`` (see :func:`adam`), then::

        p_t = p_{t-1} - α (d_t + λ p_{t-1})

    Args:
      learning_rate, b1, b2, eps, eps_root, mu_dtype, nu_dtype, nesterov: as in :func:`adam`.
      weight_decay: ``λ`` >= 0 (multiplied by the learning rate, as in the paper's
        implementation in PyTorch and optax).
      mask: which parameters decay: a pytree of bools like the params, or a function
        ``params -> such a tree`` (e.g. skip biases and norms). ``None``: all.

    References:
      Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019,
      https://arxiv.org/abs/1711.05101.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.adamw(0.1, weight_decay=0.5)
    >>> p = {"w": jnp.array(2.0)}
    >>> u, _ = opt.update({"w": jnp.array(0.0)}, opt.init(p), p)
    >>> round(float(u["w"]), 6)   # zero gradient: only the decay, -α λ p
    -0.1
    """
    check_learning_rate(learning_rate)
    check_nonnegative("weight_decay", weight_decay)
    scale_by_adam(b1, b2, eps, eps_root)

    def build(learning_rate, b1, b2, eps, eps_root, weight_decay):
        return chain(
            scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype),
            add_decayed_weights(weight_decay, mask),
            scale_by_learning_rate(learning_rate),
        )

    opt = named_optimizer(
        build,
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        eps_root=eps_root,
        weight_decay=weight_decay,
    )
    # with a mask the decay depends on the leaf, so it is elementwise only without one
    return _elementwise(opt) if mask is None or isinstance(mask, bool) else opt


def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: float | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
) -> GradientTransformation:
    """RMSprop (Tieleman & Hinton, 2012), optionally centered (Graves, 2013) and with momentum.

    Update rule::

        v_t = ρ v_{t-1} + (1 - ρ) g_t²
        d_t = g_t / sqrt(v_t + ε)                       (centered: sqrt(v_t - m_t² + ε),
                                                          m_t = ρ m_{t-1} + (1 - ρ) g_t)
        p_t = p_{t-1} - α d_t                           (momentum=None)
        b_t = β b_{t-1} + α d_t;  p_t = p_{t-1} - b_t   (momentum β)

    Args:
      learning_rate: ``α`` > 0.
      decay: ``ρ`` in [0, 1).
      eps: ``ε`` >= 0; ``eps_in_sqrt`` puts it inside the root (default) or outside.
      initial_scale: the starting ``v_0``.
      centered: divide by the estimated standard deviation instead of the RMS.
      momentum: ``β`` in [0, 1) or ``None``; ``nesterov`` for the look-ahead form.
      bias_correction: debias the running averages as Adam does.

    References:
      Tieleman & Hinton, Coursera "Neural Networks for Machine Learning", Lecture 6.5, 2012.
      Graves, "Generating Sequences With Recurrent Neural Networks", 2013.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.rmsprop(0.1, decay=0.0, eps=0.0)
    >>> p = {"w": jnp.array(1.0)}
    >>> u, _ = opt.update({"w": jnp.array(-4.0)}, opt.init(p), p)
    >>> round(float(u["w"]), 6)
    0.1
    """
    check_learning_rate(learning_rate)
    if momentum is not None:
        check_decay("momentum", momentum)
    scale_by_rms(decay, eps, initial_scale)

    def build(learning_rate, decay, eps, initial_scale, momentum):
        scaler = scale_by_stddev if centered else scale_by_rms
        return chain(
            scaler(decay, eps, initial_scale, eps_in_sqrt, bias_correction),
            scale_by_learning_rate(learning_rate),
            trace(momentum, nesterov) if momentum is not None else identity(),
        )

    return _elementwise(
        named_optimizer(
            build,
            learning_rate=learning_rate,
            decay=decay,
            eps=eps,
            initial_scale=initial_scale,
            momentum=momentum,
        )
    )


def adagrad(
    learning_rate: ScalarOrSchedule,
    initial_accumulator_value: float = 0.1,
    eps: float = 1e-7,
) -> GradientTransformation:
    """AdaGrad (Duchi et al., 2011): per-coordinate steps shrinking with the summed squares.

    Update rule::

        s_t = s_{t-1} + g_t²          (s_0 = initial_accumulator_value)
        p_t = p_{t-1} - α g_t / sqrt(s_t + ε)

    Args:
      learning_rate: ``α`` > 0.
      initial_accumulator_value: ``s_0`` >= 0.
      eps: ``ε`` >= 0.

    References:
      Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and
      Stochastic Optimization", JMLR 12, 2011.

    >>> import gdopt, jax.numpy as jnp
    >>> opt = gdopt.adagrad(1.0, initial_accumulator_value=0.0, eps=0.0)
    >>> p = {"w": jnp.array(0.0)}
    >>> u, _ = opt.update({"w": jnp.array(2.0)}, opt.init(p), p)
    >>> float(u["w"])
    -1.0
    """
    check_learning_rate(learning_rate)
    scale_by_rss(initial_accumulator_value, eps)

    def build(learning_rate, initial_accumulator_value, eps):
        return chain(
            scale_by_rss(initial_accumulator_value, eps), scale_by_learning_rate(learning_rate)
        )

    return _elementwise(
        named_optimizer(
            build,
            learning_rate=learning_rate,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
        )
    )
