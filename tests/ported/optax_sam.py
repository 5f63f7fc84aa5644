"""Optax's SAM example: ``contrib.sam`` (sharpness-aware minimisation) around SGD, SGD with
momentum and Adam, its adversarial step ``optax.chain(contrib.normalize(), optax.sgd(rho))``,
against the plain optimizers on a 2-D loss with a sharp and a flat minimum.

Adapted from google-deepmind/optax, examples/contrib/sam.ipynb,
https://github.com/google-deepmind/optax/blob/main/examples/contrib/sam.ipynb
Copyright DeepMind Technologies Limited; Apache License 2.0
(https://www.apache.org/licenses/LICENSE-2.0).

Changed: ``T = 200`` steps instead of 8000; the plots (matplotlib) and the repeat of the
cells with ``opaque_mode=True`` are left out; the final parameters and losses of the six
runs collected in ``RESULTS``. The optimizer code is the original's.

Comparison (tests/test_ported.py): the SGD and momentum runs, with and without SAM, are
bit-identical; the Adam ones (``adam_*``) agree to the documented float32 ``1 - b2`` of
gdopt's named optimizers (relative 1e-4 after 200 steps).
"""

from typing import NamedTuple

import jax
import jax.numpy as np
import optax
from optax import contrib

lr = 0.01
rho = 0.1
opt = optax.sgd(lr)
adv_opt = optax.chain(contrib.normalize(), optax.sgd(rho))
sam_opt = contrib.sam(opt, adv_opt, sync_period=2)  # This is the drop-in SAM optimizer.

sgd_opt = optax.sgd(lr)  # Baseline SGD optimizer


def sam_mom(lr=1e-3, momentum=0.1, rho=0.1, sync_period=2):
    opt = optax.sgd(lr, momentum=momentum)
    adv_opt = optax.chain(contrib.normalize(), optax.sgd(rho))
    return contrib.sam(opt, adv_opt, sync_period=sync_period)


mom = 0.9
sam_mom_opt = sam_mom(lr, momentum=mom)
mom_opt = optax.sgd(lr, momentum=mom)


def sam_adam(lr=1e-3, b1=0.9, b2=0.999, rho=0.03, sync_period=5):
    """A SAM optimizer using Adam for the outer optimizer."""
    opt = optax.adam(lr, b1=b1, b2=b2)
    adv_opt = optax.chain(contrib.normalize(), optax.adam(rho))
    return contrib.sam(opt, adv_opt, sync_period=sync_period)


sam_adam_opt = sam_adam(lr)
adam_opt = optax.adam(lr)


# An example 2D loss function. It has two minima at (0,0) and (2,0).
# Both points attain almost zero loss value, but the first one is much sharper.
def loss(params):
    x, y = params
    return -np.exp(-((x - 2) ** 2) - y**2) - 1.0 * np.exp(-((x) ** 2 + (y) ** 2 * 100))


params = np.array([-0.4, -0.4])


class Store(NamedTuple):
    params: jax.typing.ArrayLike
    state: optax.OptState
    step: int = 0


sam_store = Store(params=params, state=sam_opt.init(params))
sgd_store = Store(params=params, state=sgd_opt.init(params))
sam_mom_store = Store(params=params, state=sam_mom_opt.init(params))
mom_store = Store(params=params, state=mom_opt.init(params))
sam_adam_store = Store(params=params, state=sam_adam_opt.init(params))
adam_store = Store(params=params, state=adam_opt.init(params))


def make_step(opt):
    @jax.jit
    def step(store):
        value, grads = jax.value_and_grad(loss)(store.params)
        updates, state = opt.update(grads, store.state, store.params)
        params = optax.apply_updates(store.params, updates)
        return store._replace(params=params, state=state, step=store.step + 1), value

    return step


sam_step = make_step(sam_opt)
sgd_step = make_step(sgd_opt)

sam_mom_step = make_step(sam_mom_opt)
mom_step = make_step(mom_opt)

sam_adam_step = make_step(sam_adam_opt)
adam_step = make_step(adam_opt)

T = 200
for _i in range(T):
    sam_store, sam_val = sam_step(sam_store)
    sgd_store, sgd_val = sgd_step(sgd_store)
    sam_mom_store, sam_mom_val = sam_mom_step(sam_mom_store)
    mom_store, mom_val = mom_step(mom_store)
    sam_adam_store, sam_adam_val = sam_adam_step(sam_adam_store)
    adam_store, adam_val = adam_step(adam_store)

RESULTS = {
    "params": {
        "sam": sam_store.params,
        "sgd": sgd_store.params,
        "sam_mom": sam_mom_store.params,
        "mom": mom_store.params,
    },
    "values": np.stack([sam_val, sgd_val, sam_mom_val, mom_val]),
    "adam_params": {"sam_adam": sam_adam_store.params, "adam": adam_store.params},
    "adam_values": np.stack([sam_adam_val, adam_val]),
}
