"""Tests of the modern optimizers: Muon, ADOPT, AdEMAMix, schedule-free SGD/AdamW, Prodigy,
D-Adapt AdamW, Sophia and Polyak SGD.

Parity: 100 steps of the fixed gradient sequence against optax / optax.contrib (a numeric
oracle only). gdopt stores every numeric hyperparameter in the optimizer state as a float32
array, so optax is given the same float32-rounded values (``_f32``); otherwise ``1 - β`` for
``β = 0.9999`` differs by 1.7e-4 relative (float32 vs Python double), which is a difference
in the inputs, not in the update rule.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib as oc
import pytest

import gdopt
from gdopt import (
    ademamix,
    ademamix_alpha_scheduler,
    ademamix_beta3_scheduler,
    adopt,
    dadapt_adamw,
    muon,
    polyak_sgd,
    prodigy,
    schedule_free_adamw,
    schedule_free_sgd,
    sophia,
)
from gdopt.transforms.normalization import (
    _NS_PRESETS,
    MuonDimensionNumbers,
    orthogonalize_via_newton_schulz,
    scale_by_muon,
)
from gdopt.transforms.second_order import HutchinsonState, hutchinson_estimator_diag_hessian
from gdopt.wrappers import schedule_free_eval_params
from tests.helpers import (
    assert_trajectories_close,
    gradient_sequence,
    make_params,
    run_trajectory,
)

_f32 = lambda x: float(np.float32(x))
_apply = jax.jit(lambda p, u: jax.tree.map(lambda a, b: (a + b).astype(a.dtype), p, u))


class _Bound:
    """An optimizer whose ``update`` always gets some keyword extras (e.g. ``obj_fn``), so it
    can be jitted by ``run_trajectory`` (a function cannot be a jit argument)."""

    def __init__(self, opt, **extra):
        self.init = opt.init
        self.update = functools.partial(opt.update, **extra)


def _objective(p):
    """Separable objective with a parameter-dependent diagonal Hessian (2c + 1.2 x²): the
    Hutchinson estimate is then exact whatever the random signs, so Sophia's trajectory can
    be compared with optax's although the two draw different signs."""
    leaves = jax.tree.leaves(p)
    return sum(jnp.sum((0.5 + i) * x**2 + 0.1 * x**4) for i, x in enumerate(leaves))


def _values(i, params):
    del params
    return {"value": jnp.asarray(1.0 + 0.5 * np.sin(i), jnp.float32)}


@pytest.fixture(scope="module")
def problem():
    params = make_params()
    return params, gradient_sequence(params)


# ----------------------------------------------------------------------------- parity

_DIMS_G = {
    "dense": {"w": MuonDimensionNumbers(), "b": None},
    "layers": [None, MuonDimensionNumbers(reduction_axis=1, output_axis=2)],
    "scale": None,
}
_DIMS_O = {
    "dense": {"w": oc.MuonDimensionNumbers(), "b": None},
    "layers": [None, oc.MuonDimensionNumbers(reduction_axis=1, output_axis=2)],
    "scale": None,
}


# AdEMAMix's warm-ups for optax's side, written here from the paper's formulas (Pagliardini,
# Ablin & Grangier, 2024, https://arxiv.org/abs/2409.03113, Appendix), independently of
# gdopt's ademamix_*_scheduler: optax has no scheduler of its own, and handing it gdopt's
# would let a wrong gdopt scheduler (e.g. swapped β3 endpoints) pass unseen.
def _paper_alpha_warmup(alpha, warmup):
    """``f_α(t) = min(t α / T_α, α)``: linear from 0 to ``α`` over ``T_α`` steps."""
    return lambda t: alpha * jnp.minimum(jnp.asarray(t, jnp.float32) / warmup, 1.0)


def _paper_beta3_warmup(beta_start, beta_end, warmup):
    """``f_β3(t) = min(exp(ln β_s ln β_e / ((1 - t/T) ln β_e + (t/T) ln β_s)), β_e)``."""
    ls, le = float(np.log(beta_start)), float(np.log(beta_end))

    def schedule(t):
        x = jnp.asarray(t, jnp.float32) / warmup
        return jnp.minimum(jnp.exp(ls * le / ((1 - x) * le + x * ls)), beta_end)

    return schedule


PARITY = {
    "muon": (
        lambda: muon(0.01),
        lambda: oc.muon(0.01, beta=_f32(0.95), adam_b1=_f32(0.9), adam_b2=_f32(0.999)),
        None,
    ),
    "muon-nondefault": (
        lambda: muon(
            0.02,
            ns_steps=4,
            beta=0.9,
            weight_decay=0.1,
            weight_decay_mask={"dense": True, "layers": False, "scale": False},
            nesterov=False,
            adaptive=True,
            preconditioning="spectral",
            adam_b1=0.8,
            adam_b2=0.99,
            adam_eps_root=1e-8,
            adam_weight_decay=0.01,
            adam_learning_rate=0.003,
            consistent_rms=0.2,
            muon_weight_dimension_numbers=_DIMS_G,
        ),
        lambda: oc.muon(
            0.02,
            ns_steps=4,
            beta=_f32(0.9),
            weight_decay=_f32(0.1),
            weight_decay_mask={"dense": True, "layers": False, "scale": False},
            nesterov=False,
            adaptive=True,
            preconditioning="spectral",
            adam_b1=_f32(0.8),
            adam_b2=_f32(0.99),
            adam_eps_root=_f32(1e-8),
            adam_weight_decay=_f32(0.01),
            adam_learning_rate=_f32(0.003),
            consistent_rms=_f32(0.2),
            muon_weight_dimension_numbers=_DIMS_O,
        ),
        None,
    ),  # fmt: skip
    "adopt": (lambda: adopt(0.01), lambda: oc.adopt(0.01, b1=_f32(0.9), b2=_f32(0.9999)), None),
    "adopt-nondefault": (
        lambda: adopt(0.02, b1=0.8, b2=0.99, eps=1e-4, nesterov=True),
        lambda: oc.adopt(0.02, b1=_f32(0.8), b2=_f32(0.99), eps=_f32(1e-4), nesterov=True),
        None,
    ),
    "ademamix": (
        lambda: ademamix(0.01),
        lambda: oc.ademamix(0.01, b1=_f32(0.9), b2=_f32(0.999), b3=_f32(0.9999)),
        None,
    ),
    "ademamix-nondefault": (
        lambda: ademamix(
            0.02,
            b1=0.8,
            b2=0.99,
            b3=ademamix_beta3_scheduler(0.8, 0.999, 50),
            alpha=ademamix_alpha_scheduler(4.0, 30),
            eps_root=1e-6,
            weight_decay=0.1,
            mask={"dense": True, "layers": False, "scale": False},
        ),
        lambda: oc.ademamix(
            0.02,
            b1=_f32(0.8),
            b2=_f32(0.99),
            b3=_paper_beta3_warmup(0.8, 0.999, 50),
            alpha=_paper_alpha_warmup(4.0, 30),
            eps_root=_f32(1e-6),
            weight_decay=_f32(0.1),
            mask={"dense": True, "layers": False, "scale": False},
        ),
        None,
    ),  # fmt: skip
    "schedule_free_sgd": (
        lambda: schedule_free_sgd(),
        lambda: oc.schedule_free_sgd(b1=_f32(0.9)),
        None,
    ),
    "schedule_free_sgd-nondefault": (
        # No warm-up: optax.contrib takes the z-step with the previous step's warm-up rate
        # (gdopt, the paper and the authors' schedulefree package use the current one).
        lambda: schedule_free_sgd(0.3, b1=0.8, weight_decay=0.01, weight_lr_power=1.0),
        lambda: oc.schedule_free_sgd(
            _f32(0.3),
            b1=_f32(0.8),
            weight_decay=_f32(0.01),
            weight_lr_power=1.0,
        ),
        None,
    ),  # fmt: skip
    "schedule_free_adamw": (
        lambda: schedule_free_adamw(),
        lambda: oc.schedule_free_adamw(_f32(0.0025), b1=_f32(0.9), b2=_f32(0.999)),
        None,
    ),
    "schedule_free_adamw-nondefault": (
        # No warm-up: see schedule_free_sgd-nondefault.
        lambda: schedule_free_adamw(
            0.01,
            b1=0.95,
            b2=0.99,
            eps=1e-6,
            weight_decay=0.05,
            weight_lr_power=1.5,
        ),
        lambda: oc.schedule_free_adamw(
            _f32(0.01),
            b1=_f32(0.95),
            b2=_f32(0.99),
            eps=_f32(1e-6),
            weight_decay=_f32(0.05),
            weight_lr_power=1.5,
        ),
        None,
    ),  # fmt: skip
    "prodigy": (
        lambda: prodigy(),
        lambda: oc.prodigy(betas=(_f32(0.9), _f32(0.999))),
        None,
    ),
    "prodigy-nondefault": (
        lambda: prodigy(
            0.5,
            betas=(0.8, 0.99),
            beta3=0.95,
            eps=1e-6,
            estim_lr0=1e-4,
            estim_lr_coef=2.0,
            weight_decay=0.01,
            safeguard_warmup=True,
        ),
        lambda: oc.prodigy(
            0.5,
            betas=(_f32(0.8), _f32(0.99)),
            beta3=_f32(0.95),
            eps=_f32(1e-6),
            estim_lr0=_f32(1e-4),
            estim_lr_coef=2.0,
            weight_decay=_f32(0.01),
            safeguard_warmup=True,
        ),
        None,
    ),  # fmt: skip
    "dadapt_adamw": (
        lambda: dadapt_adamw(),
        lambda: oc.dadapt_adamw(betas=(_f32(0.9), _f32(0.999))),
        None,
    ),
    "dadapt_adamw-nondefault": (
        lambda: dadapt_adamw(0.5, betas=(0.8, 0.99), eps=1e-6, estim_lr0=1e-4, weight_decay=0.01),
        lambda: oc.dadapt_adamw(
            0.5,
            betas=(_f32(0.8), _f32(0.99)),
            eps=_f32(1e-6),
            estim_lr0=_f32(1e-4),
            weight_decay=_f32(0.01),
        ),
        None,
    ),
    "sophia": (
        lambda: _Bound(sophia(0.01), obj_fn=_objective),
        lambda: _Bound(
            oc.sophia(0.01, b1=_f32(0.965), b2=_f32(0.99), weight_decay=_f32(1e-4)),
            obj_fn=_objective,
        ),
        None,
    ),
    "sophia-nondefault": (
        lambda: _Bound(
            sophia(
                0.02,
                b1=0.9,
                b2=0.95,
                eps=1e-6,
                weight_decay=0.01,
                gamma=0.05,
                clip_threshold=0.5,
                update_interval=3,
            ),
            obj_fn=_objective,
        ),
        lambda: _Bound(
            oc.sophia(
                0.02,
                b1=_f32(0.9),
                b2=_f32(0.95),
                eps=_f32(1e-6),
                weight_decay=_f32(0.01),
                gamma=_f32(0.05),
                clip_threshold=0.5,
                update_interval=3,
            ),
            obj_fn=_objective,
        ),
        None,
    ),  # fmt: skip
    "polyak_sgd": (lambda: polyak_sgd(), lambda: optax.polyak_sgd(), _values),
    "polyak_sgd-nondefault": (
        lambda: polyak_sgd(
            max_learning_rate=0.05, scaling=0.5, f_min=0.2, eps=1e-3, variant="sps+"
        ),
        lambda: optax.polyak_sgd(
            max_learning_rate=_f32(0.05),
            scaling=0.5,
            f_min=_f32(0.2),
            eps=_f32(1e-3),
            variant="sps+",
        ),
        _values,
    ),
}


@pytest.mark.parametrize("name", list(PARITY))
def test_parity_with_optax(problem, name):
    params, grads = problem
    make_gdopt, make_optax, extra = PARITY[name]
    actual = run_trajectory(make_gdopt(), params, grads, apply=_apply, extra=extra)
    expected = run_trajectory(make_optax(), params, grads, apply=_apply, extra=extra)
    assert_trajectories_close(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "make, make_optax",
    [
        (lambda: schedule_free_adamw(0.05), lambda: oc.schedule_free_adamw(0.05, b1=_f32(0.9))),
        (lambda: schedule_free_sgd(0.1, b1=0.7), lambda: oc.schedule_free_sgd(0.1, b1=_f32(0.7))),
    ],
)
def test_schedule_free_eval_params_match_optax(problem, make, make_optax):
    params, grads = problem
    out = []
    for opt, eval_fn in (
        (make(), schedule_free_eval_params),
        (make_optax(), oc.schedule_free_eval_params),
    ):
        p, s = params, opt.init(params)
        update = jax.jit(opt.update)
        for g in grads[:20]:
            u, s = update(g, s, p)
            p = _apply(p, u)
        out.append([eval_fn(s, p)])
    assert_trajectories_close(out[0], out[1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(jax.tree.leaves(out[0])[0], jax.tree.leaves(params)[0])


def test_schedule_free_eval_params_needs_a_schedule_free_state():
    with pytest.raises(ValueError, match="ScheduleFreeState"):
        schedule_free_eval_params(gdopt.adam(0.1).init(jnp.zeros(2)), jnp.zeros(2))


# ----------------------------------------------------------------------------- Muon details


def _quintic(s, coeffs, steps):
    a, b, c = coeffs
    for _ in range(steps):
        s = a * s + b * s**3 + c * s**5
    return s


def test_newton_schulz_8x8_against_the_scalar_quintic():
    """NS acts on singular values only: NS(x) = U p⁵(Σ / ||x||_F) Vᵀ with the quintic p."""
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (8, 8)), np.float64)
    out = np.asarray(orthogonalize_via_newton_schulz(jnp.asarray(x, jnp.float32)), np.float64)
    u, s, vt = np.linalg.svd(x)
    coeffs = (3.4445, -4.775, 2.0315)
    expected = u @ np.diag(_quintic(s / np.linalg.norm(x), coeffs, 5)) @ vt
    np.testing.assert_allclose(out, expected, atol=2e-5)
    # The quintic's band: 5 iterations map (σ_min/||x||_F, 1] into about [0.68, 1.13].
    band = _quintic(np.linspace(s.min() / np.linalg.norm(x), 1.0, 10001), coeffs, 5)
    sv = np.linalg.svd(out, compute_uv=False)
    assert band.min() - 1e-4 <= sv.min() and sv.max() <= band.max() + 1e-4
    assert 0.65 < sv.min() and sv.max() < 1.2


def test_newton_schulz_variants_match_optax():
    """The preconditionings and presets that the trajectory tests do not cover (they use
    Frobenius and spectral), on a tall matrix (exercises the transpose)."""
    variants = [("standard", "aol"), ("standard", "schatten"), ("dion", "frobenius")]
    table = {"standard": (3.4445, -4.775, 2.0315), "dion": _NS_PRESETS["dion"]}
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 3))

    @jax.jit
    def both(x):
        ours = [orthogonalize_via_newton_schulz(x, c, 5, p) for c, p in variants]
        theirs = [
            oc._muon.orthogonalize_via_newton_schulz(x, jnp.asarray(table[c]), 5, p)
            for c, p in variants
        ]
        return ours, theirs

    for v, a, b in zip(variants, *both(x), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=str(v))


def test_newton_schulz_batch_axes_are_independent():
    stack = jax.random.normal(jax.random.PRNGKey(2), (3, 4, 6))
    kernel = jax.random.normal(jax.random.PRNGKey(4), (2, 2, 3, 5))

    @jax.jit
    def run(stack, kernel):
        ns = orthogonalize_via_newton_schulz
        batched = ns(stack, dimension_numbers=MuonDimensionNumbers(1, 2))
        slices = [ns(stack[i]) for i in range(3)]
        # (h, w, c_in, c_out) kernel viewed as an (h*w*c_in, c_out) matrix.
        conv = ns(kernel, dimension_numbers=MuonDimensionNumbers((0, 1, 2), 3))
        return batched, slices, conv, ns(kernel.reshape(12, 5))

    batched, slices, conv, flat = run(stack, kernel)
    for i in range(3):
        np.testing.assert_allclose(batched[i], slices[i], atol=1e-6)
    np.testing.assert_allclose(conv.reshape(12, 5), flat, atol=1e-6)


def test_muon_masked_leaf_goes_to_adam():
    p = {"w": jnp.ones((3, 2)), "v": jnp.ones((3, 2))}
    g = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0], [0.0, 1.0]]), "v": jnp.ones((3, 2))}
    opt = muon(0.1, muon_weight_dimension_numbers={"w": None, "v": MuonDimensionNumbers()})
    u, _ = opt.update(g, opt.init(p), p)
    ref = gdopt.adamw(0.1, weight_decay=0.0, nesterov=True)
    u_ref, _ = ref.update(g, ref.init(p), p)
    np.testing.assert_allclose(u["w"], u_ref["w"], rtol=1e-6)
    assert not np.allclose(u["v"], u_ref["v"])


def test_scale_by_muon_rejects_non_matrices_with_the_key_path():
    t = scale_by_muon()
    g = {"b": jnp.ones(3)}
    with pytest.raises(ValueError, match=r"updates\['b'\] has shape \(3,\)"):
        t.update(g, t.init(g))


def test_hutchinson_estimate_is_unbiased():
    """Mean of u ⊙ Hu over draws approaches diag(H) for a non-diagonal Hessian."""
    h = jnp.array([[2.0, 1.0, 0.5], [1.0, 3.0, -1.0], [0.5, -1.0, 4.0]])
    loss = lambda x: 0.5 * x @ h @ x
    t = hutchinson_estimator_diag_hessian(jax.random.PRNGKey(7))
    p = jnp.zeros(3)

    def body(s, _):
        est, s = t.update(p, s, p, obj_fn=loss)
        return s, est

    _, ests = jax.lax.scan(body, t.init(p), None, length=2000)
    np.testing.assert_allclose(ests.mean(0), jnp.diag(h), atol=0.1)
    assert float(jnp.std(ests[:, 0])) > 0.5  # really random (off-diagonal terms)


def test_ademamix_schedulers_follow_the_paper():
    a = ademamix_alpha_scheduler(5.0, 10)
    assert [round(float(a(t)), 4) for t in (0, 5, 10, 100)] == [0.0, 2.5, 5.0, 5.0]
    b = ademamix_beta3_scheduler(0.9, 0.9999, 100)
    # Halfway in 1/ln(beta): ln(b3(50)) = 2 ln(0.9) ln(0.9999) / (ln(0.9) + ln(0.9999)).
    half = np.exp(2 * np.log(0.9) * np.log(0.9999) / (np.log(0.9) + np.log(0.9999)))
    np.testing.assert_allclose(float(b(50)), half, rtol=1e-6)


# ----------------------------------------------------------------------------- convergence


def _rosenbrock(x):
    x = x.reshape(-1)
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def _parabola(x):
    return jnp.sum((x - 1.0) ** 2)


# name: (parabola optimizer, steps, rosenbrock optimizer, steps). Every optimizer gets the
# value (Polyak) and the objective (Sophia) as extras; the others must ignore them.
# Budgets: Rosenbrock from (0, 0) is the hard case. Prodigy and D-Adapt with a constant
# multiplier stall at ~3e-2 and ~4e-3 after 3000 steps, so they get the cosine annealing
# their papers recommend; schedule-free SGD with the default b1 = 0.9 circles the minimum
# slowly (error ~5e-3..2e-2 for 40k steps), b1 = 0.5 settles (~1e-3 at 20k steps); Sophia
# needs a short Hessian refresh interval on Rosenbrock and a small momentum on the parabola.
CONVERGENCE = {
    "muon": (
        lambda: muon(gdopt.cosine_decay_schedule(0.05, 400)),
        400,
        lambda: muon(gdopt.cosine_decay_schedule(0.02, 3000)),
        3000,
    ),
    "adopt": (lambda: adopt(0.05), 500, lambda: adopt(0.01), 3000),
    "ademamix": (
        lambda: ademamix(0.05, b3=0.99),
        500,
        lambda: ademamix(0.01, b3=0.99, alpha=2.0),
        3000,
    ),
    "schedule_free_sgd": (
        lambda: schedule_free_sgd(0.2),
        200,
        lambda: schedule_free_sgd(0.002, b1=0.5),
        20000,
    ),
    "schedule_free_adamw": (
        lambda: schedule_free_adamw(0.1, warmup_steps=10),
        500,
        lambda: schedule_free_adamw(0.02, warmup_steps=100),
        5000,
    ),
    "prodigy": (
        lambda: prodigy(),
        300,
        lambda: prodigy(gdopt.cosine_decay_schedule(1.0, 3000)),
        3000,
    ),
    "dadapt_adamw": (
        lambda: dadapt_adamw(),
        300,
        lambda: dadapt_adamw(gdopt.cosine_decay_schedule(1.0, 3000)),
        3000,
    ),
    "sophia": (
        lambda: sophia(0.05, b1=0.9, b2=0.9, gamma=0.1, update_interval=2, weight_decay=0.0),
        200,
        lambda: sophia(0.02, update_interval=1, weight_decay=0.0),
        3000,
    ),
    "polyak_sgd": (lambda: polyak_sgd(), 50, lambda: polyak_sgd(max_learning_rate=0.01), 6000),
}


def _run(opt, f, x, steps, schedule_free):
    s0 = opt.init(x)

    def body(_, carry):
        x, s = carry
        v, g = jax.value_and_grad(f)(x)
        u, s = opt.update(g, s, x, value=v, obj_fn=f)
        return gdopt.apply_updates(x, u), s

    x, s = jax.lax.fori_loop(0, steps, body, (x, s0))
    return (schedule_free_eval_params(s, x) if schedule_free else x), s0, s


@pytest.mark.parametrize("name", list(CONVERGENCE))
def test_reaches_parabola_and_rosenbrock_minima_jitted(name):
    make_p, n_p, make_r, n_r = CONVERGENCE[name]
    sf = name.startswith("schedule_free")
    traces = []

    @jax.jit
    def solve(xp, xr, xb):
        traces.append(1)
        p = _run(make_p(), _parabola, xp, n_p, sf)
        r = _run(make_r(), _rosenbrock, xr, n_r, sf)
        b = _run(make_p(), _parabola, xb, 3, sf)  # bfloat16: dtypes only
        return p, r, b

    rshape = (1, 2) if name == "muon" else (2,)  # Muon's branch needs a matrix
    xb = jnp.zeros((3, 4), jnp.bfloat16)
    (xp, sp0, sp), (xr, sr0, sr), (xb_out, sb0, sb) = solve(
        jnp.zeros((3, 4)), jnp.zeros(rshape), xb
    )
    assert float(jnp.max(jnp.abs(xp - 1))) < 1e-3
    assert float(jnp.max(jnp.abs(xr - 1))) < 1e-2
    assert xp.dtype == xr.dtype == jnp.float32 and xb_out.dtype == jnp.bfloat16
    dtypes = lambda t: [x.dtype for x in jax.tree.leaves(t)]
    assert dtypes(sp0) == dtypes(sp) and dtypes(sr0) == dtypes(sr) and dtypes(sb0) == dtypes(sb)
    assert bool(jnp.all(jnp.isfinite(xb_out.astype(jnp.float32))))
    opt = make_p()
    u, _ = jax.eval_shape(
        lambda x, s: opt.update(x, s, x, value=_parabola(x), obj_fn=_parabola), xb, opt.init(xb)
    )
    assert u.dtype == jnp.bfloat16  # updates in the dtype of the incoming gradients
    # New values, same shapes and dtypes: no retrace.
    solve(jnp.full((3, 4), 0.5, jnp.float32), jnp.full(rshape, 0.1, jnp.float32), xb + 1)
    assert len(traces) == 1


# ----------------------------------------------------------------------------- errors


def test_polyak_without_value_says_how_to_pass_it():
    opt = polyak_sgd()
    p = jnp.zeros(2)
    with pytest.raises(ValueError, match=r"opt.update\(grads, state, params, value=loss\)"):
        opt.update(jnp.ones(2), opt.init(p), p)


def test_sophia_without_objective_says_how_to_pass_it():
    opt = sophia(0.1)
    p = jnp.zeros(2)
    with pytest.raises(ValueError, match=r"obj_fn=loss_fn"):
        opt.update(jnp.ones(2), opt.init(p), p)


def test_sophia_accepts_value_fn_and_a_key():
    loss = lambda q: jnp.sum(q**2)
    p = jnp.array([1.0, -2.0])
    hess = hutchinson_estimator_diag_hessian(jax.random.PRNGKey(5))
    opt = sophia(0.1, update_interval=1, hessian_diagonal_fn=hess)
    u, s = opt.update(jax.grad(loss)(p), opt.init(p), p, value_fn=loss)
    assert bool(jnp.all(jnp.isfinite(u)))
    is_h = lambda x: isinstance(x, HutchinsonState)
    (h,) = [x for x in jax.tree.leaves(s, is_leaf=is_h) if is_h(x)]
    assert not np.array_equal(h.key, jax.random.PRNGKey(5))  # a fresh key for the next draw


@pytest.mark.parametrize(
    "factory",
    [
        lambda: prodigy(),
        lambda: dadapt_adamw(),
        lambda: schedule_free_sgd(),
        lambda: schedule_free_adamw(),
    ],
)
def test_params_are_required(factory):
    opt = factory()
    with pytest.raises(ValueError, match="params"):
        opt.update(jnp.ones(2), opt.init(jnp.zeros(2)))


@pytest.mark.parametrize(
    "build, arg",
    [
        (lambda: muon(0.1, beta=1.5), "beta"),
        (lambda: muon(0.1, ns_steps=0), "ns_steps"),
        (lambda: muon(0.1, ns_coeffs=(1.0, 2.0)), "ns_coeffs"),
        (lambda: muon(0.1, ns_coeffs="nope"), "ns_coeffs"),
        (lambda: muon(0.1, preconditioning="qr"), "preconditioning"),
        (lambda: muon(-0.1), "learning_rate"),
        (lambda: muon(0.1, adam_b2=1.0), "adam_b2"),
        (lambda: adopt(0.1, b2=1.0), "b2"),
        (lambda: adopt(0.1, eps=-1.0), "eps"),
        (lambda: ademamix(0.1, b3=1.2), "b3"),
        (lambda: ademamix(0.1, alpha=-1.0), "alpha"),
        (lambda: ademamix_alpha_scheduler(1.0, 0), "warmup"),
        (lambda: schedule_free_sgd(b1=1.0), "b1"),
        (lambda: schedule_free_sgd(warmup_steps=0), "warmup_steps"),
        (lambda: schedule_free_adamw(learning_rate=-1.0), "learning_rate"),
        (lambda: schedule_free_adamw(weight_decay=-1.0), "weight_decay"),
        (lambda: prodigy(betas=(0.9,)), "betas"),
        (lambda: prodigy(betas=(0.9, 1.5)), r"betas\[1\]"),
        (lambda: prodigy(estim_lr0=0.0), "estim_lr0"),
        (lambda: dadapt_adamw(weight_decay=-1.0), "weight_decay"),
        (lambda: sophia(0.1, gamma=0.0), "gamma"),
        (lambda: sophia(0.1, update_interval=0), "update_interval"),
        (lambda: sophia(0.1, clip_threshold=-1.0), "clip_threshold"),
        (lambda: polyak_sgd(variant="sgd"), "variant"),
        (lambda: polyak_sgd(max_learning_rate=0.0), "max_learning_rate"),
        (lambda: polyak_sgd(scaling=-1.0), "scaling"),
    ],
)
def test_bad_hyperparameters_name_the_argument(build, arg):
    with pytest.raises(ValueError, match=arg):
        build()


def test_hyperparameters_live_in_the_state():
    state = muon(0.1, beta=0.9).init({"w": jnp.zeros((2, 2))})
    hp = gdopt.get_hyperparams(state)
    assert round(float(hp["beta"]), 6) == 0.9 and hp["ns_coeffs"].shape == (3,)
    state = gdopt.set_hyperparams(prodigy().init(jnp.zeros(2)), weight_decay=0.5)
    assert float(gdopt.get_hyperparams(state)["weight_decay"]) == 0.5
