"""One compiled training step, for loops written by hand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from gdopt.base import GradientTransformation, apply_updates
from gdopt.engine._checks import check_loss_output, check_opt_state, check_params_are_arrays
from gdopt.packing import PACKED, TREE, Packed

__all__ = ["make_step"]


def make_step(
    loss_fn: Callable[..., Any],
    optimizer: GradientTransformation,
    *,
    has_aux: bool = False,
    donate: bool = True,
    jit: bool = True,
    pack: bool = False,
    mesh: Any = None,
    data_axis: str = "data",
    shard_opt_state: bool = False,
) -> Callable[..., tuple]:
    """Build one training step: gradient, optimizer update and parameter update.

    The step computes ``loss, grads = jax.value_and_grad(loss_fn)(params, batch)``, then
    ``updates, opt_state = optimizer.update(grads, opt_state, params, value=loss, grad=grads,
    value_fn=lambda p: loss_fn(p, batch), **extra)`` (``value`` serves optimizers that use the
    loss, e.g. Polyak step sizes; ``grad``/``value_fn`` serve line searches and L-BFGS, which
    re-evaluate the loss on the same batch; transforms that do not need them ignore them) and
    ``params = apply_updates(params, updates)``.

    With ``jit=True`` the step is compiled with ``jax.jit``; calls with the same shapes and
    dtypes reuse the compiled program. With ``donate=True`` (the default) the buffers of
    ``params`` and ``opt_state`` are donated (``donate_argnums=(0, 1)``), so XLA writes the new
    values in place: **the arrays you pass as params and opt_state are deleted by the call**;
    keep using the ones it returns (``params, opt_state, loss = step(params, opt_state, b)``)
    and copy them first if you need the old values. Both arguments are always used by the step
    (and ``keep_unused=True`` is set), so the donation is never silently dropped. Do not pass
    the same array in both (e.g. an optimizer state that holds the params object itself).

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` (or ``-> (scalar, aux)`` with
        ``has_aux``).
      optimizer: a gradient transformation (``init``/``update`` pair).
      has_aux: ``loss_fn`` returns ``(loss, aux)``; the step then returns
        ``(params, opt_state, loss, aux)``.
      donate: donate the ``params`` and ``opt_state`` buffers (only with ``jit``).
      jit: compile with ``jax.jit``; ``False`` returns the plain function (to use inside
        your own ``jit``/``scan``/``vmap``).
      pack: the step takes and returns packed parameters (a :class:`~gdopt.packing.Packed`
        from :func:`gdopt.pack`) and the state of ``packed_optimizer(optimizer)``: pack once,
        step many times, :func:`gdopt.unpack` at the end. ``loss_fn`` still receives the
        unpacked pytree (slices of the buffers); the gradient is packed inside the step and
        a packable optimizer updates whole buffers (see :mod:`gdopt.packing`).
      mesh: ``None``, ``"auto"`` or a :class:`jax.sharding.Mesh`: the step splits each
        batch over ``data_axis`` and keeps the parameters and state on the shardings they
        come with (:func:`gdopt.sharding.mesh_step`; docs/distributed.md). Needs ``jit``.
      data_axis: the mesh axis the batch is split over.
      shard_opt_state: with a mesh, split the optimizer state over ``data_axis`` (ZeRO-1).

    Returns:
      ``step(params, opt_state, batch, **extra) -> (params, opt_state, loss)``; keyword
      ``extra`` arguments are passed on to ``optimizer.update``.

    >>> import gdopt, jax.numpy as jnp
    >>> loss = lambda p, b: jnp.mean((p["w"] * b[0] - b[1]) ** 2)
    >>> opt = gdopt.sgd(0.1)
    >>> step = make_step(loss, opt)
    >>> params = {"w": jnp.array(0.0)}
    >>> state = opt.init(params)
    >>> batch = (jnp.array([1.0, 2.0]), jnp.array([2.0, 4.0]))
    >>> for _ in range(50):
    ...     params, state, value = step(params, state, batch)
    >>> round(float(params["w"]), 4)
    2.0

    Packed, for a hand-written loop over a model with many parameter arrays:

    >>> from gdopt.packing import packed_optimizer
    >>> pstep = make_step(loss, opt, pack=True)
    >>> packed = gdopt.pack({"w": jnp.array(0.0)})
    >>> pstate = packed_optimizer(opt).init(packed)
    >>> for _ in range(50):
    ...     packed, pstate, value = pstep(packed, pstate, batch)
    >>> round(float(gdopt.unpack(packed)["w"]), 4)
    2.0
    """
    if pack not in (True, False):
        raise TypeError(f"make_step's pack must be True or False, got {pack!r}.")
    layout = PACKED if pack else TREE
    grad_fn = layout.value_and_grad(loss_fn, has_aux)
    carried_loss = layout.loss(loss_fn)
    optimizer = layout.optimizer(optimizer)

    def value_fn(batch: Any) -> Callable[[Any], Any]:
        if has_aux:
            return lambda p: carried_loss(p, batch)[0]
        return lambda p: carried_loss(p, batch)

    def step(params, opt_state, batch, **extra):
        if pack and not isinstance(params, Packed):
            raise TypeError(
                "make_step(pack=True): params must be packed (gdopt.pack(params)), got "
                f"{type(params).__name__}."
            )
        try:
            out, grads = grad_fn(params, batch)
        except TypeError:
            # a non-array leaf (a model passed whole), a vector, or a (loss, aux) pair
            # without has_aux: say so (only on this failure path: no cost otherwise)
            check_params_are_arrays(params)
            check_loss_output(jax.eval_shape(carried_loss, params, batch), has_aux)
            raise
        loss, aux = out if has_aux else (out, None)
        extras = {"value": loss, "grad": grads, "value_fn": value_fn(batch), **extra}
        try:
            updates, opt_state = optimizer.update(grads, opt_state, params, **extras)
        except Exception:
            check_opt_state(optimizer, params, opt_state)  # a foreign or malformed state
            raise
        params = apply_updates(params, updates)
        if has_aux:
            return params, opt_state, loss, aux
        return params, opt_state, loss

    if mesh is not None:  # several devices: compiled by gdopt.sharding
        from gdopt import sharding

        if not jit or pack:
            raise ValueError(
                "make_step(mesh=...) compiles the step for the mesh: it needs jit=True and "
                f"pack=False, got jit={jit!r}, pack={pack!r}."
            )
        return sharding.mesh_step(
            step,
            optimizer,
            mesh=mesh,
            data_axis=data_axis,
            shard_opt_state=shard_opt_state,
            donate=donate,
        )
    if not jit:
        return step
    return jax.jit(step, donate_argnums=(0, 1) if donate else (), keep_unused=True)
