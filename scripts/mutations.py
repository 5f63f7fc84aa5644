"""Deliberate breakages of gdopt, each of which the test suite must catch.

Each mutation replaces one exact piece of source text in a scratch copy of the repository
and runs the given tests there; a mutation the tests do not catch is reported as SURVIVED.
Run it after changing the engine, packing or an optimizer's rule::

    python scripts/mutations.py            # every mutation (a few minutes)
    python scripts/mutations.py -k packspec

The scratch copies live in a temporary directory and are removed afterwards.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (name, file, original text, mutated text, tests that must fail)
MUTATIONS = [
    (
        "divergence guard applies the step whose loss is not finite",
        "gdopt/engine/core.py",
        "        ok = finite & ~stopped  # once training stopped, nothing changes",
        "        ok = ~stopped",
        "tests/engine/test_core.py",
    ),
    (
        "convergence streak not reset between epochs",
        "gdopt/engine/core.py",
        "streak = jnp.where(small, s.streak + 1, 0).astype(jnp.int32)",
        "streak = jnp.where(small, s.streak + 1, s.streak).astype(jnp.int32)",
        "tests/engine/test_core.py",
    ),
    (
        "the same shuffle every epoch",
        "gdopt/engine/core.py",
        "                jax.random.fold_in(key, s.epoch), data, batch_size, shuffle=shuffle",
        "                key, data, batch_size, shuffle=shuffle",
        "tests/engine/test_fit.py",
    ),
    (
        "fit never packs",
        "gdopt/engine/fit.py",
        "    layout = layout_for(params, optimizer, pack)",
        "    layout = layout_for(params, optimizer, False)",
        "tests/engine/test_fit.py",
    ),
    (
        "evaluation runs on the training data",
        "gdopt/engine/core.py",
        "        eval_loss, eval_acc = evaluate(s.params, eval_data)",
        "        eval_loss, eval_acc = evaluate(s.params, data if eval_data is not None else None)",
        "tests/engine/test_core.py",
    ),
    (
        "PackSpec equality ignores slot shapes",
        "gdopt/packing.py",
        "        key = (self.treedef, self.dtypes, self.sizes, self.slots)",
        "        key = (self.treedef, self.dtypes, self.sizes, tuple(s[:2] for s in self.slots))",
        "tests/test_packing.py",
    ),
    (
        "update_moment does not cast gradients up to the moment dtype",
        "gdopt/_numerics.py",
        "            g = cast_to(g, md)",
        "            pass",
        "tests/test_numerics.py",
    ),
    (
        "bias correction compiles a power kernel per step count",
        "gdopt/_numerics.py",
        "        return 1 - jax.lax.pow(base, cast_to(count, jnp.int32))",
        "        return 1 - base ** int(count)",
        "tests/test_numerics.py",
    ),
    (
        "map_leaves drops the state of a None leaf",
        "gdopt/_numerics.py",
        "            res = (None, *xs[1:n_out], *([None] * (n_out - len(xs))))",
        "            res = (None,) * n_out",
        "tests/test_numerics.py",
    ),
    (
        "eager cond runs lax.cond (a compile per call)",
        "gdopt/_control.py",
        "    if is_concrete(pred):",
        "    if False:",
        "tests/test_control.py",
    ),
    (
        "FactorySpec's fast path accepts unknown keywords",
        "gdopt/_validation.py",
        "            if all(k in out and k not in given for k in kwargs):",
        "            if all(k not in given for k in kwargs):",
        "tests/test_validation.py",
    ),
    (
        "Interval does not name the bad entry of a tuple",
        "gdopt/_validation.py",
        '                    f"{name}[{i}]", v',
        "                    name, v",
        "tests/test_validation.py",
    ),
    (
        "a tree mask keeps masked packable",
        "gdopt/combinators.py",
        "    packable = isinstance(mask, bool) and traits_of(inner).packable",
        "    packable = traits_of(inner).packable",
        "tests/test_traits.py",
    ),
    (
        "named optimizer keys hold the hyperparameter values",
        "gdopt/hyperparams.py",
        "            return None if k is None else (k, tuple(sorted(constants)))\n\n        return _hyperparams_transformation(\n            body,\n            constants,\n            schedules,\n            spec.constraints,\n            inject=False,",
        "            return None if k is None else (k, tuple(sorted(constants.items())))\n\n        return _hyperparams_transformation(\n            body,\n            constants,\n            schedules,\n            spec.constraints,\n            inject=False,",
        "tests/test_traits.py",
    ),
    (
        "hyperparameter writes are not validated",
        "gdopt/hyperparams.py",
        "    def __setitem__(self, name: str, value: Any) -> None:\n        self.check(name, value)",
        "    def __setitem__(self, name: str, value: Any) -> None:\n        pass",
        "tests/test_hyperparams.py",
    ),
    (
        "hyperparameter writes stored as given",
        "gdopt/hyperparams.py",
        "        dict.__setitem__(self, name, _as_value(value, like=self[name]))",
        "        dict.__setitem__(self, name, value)",
        "tests/test_hyperparams.py",
    ),
    (
        "fit reuses programs across optimizer structures",
        "gdopt/engine/fit.py",
        '    program_key = ("train", loss_fn, accuracy_fn, opt_key, options)',
        '    program_key = ("train", loss_fn, accuracy_fn, options)',
        "tests/engine/test_fit.py",
    ),
    (
        "the compile cache ignores the promotion mode",
        "gdopt/_compile.py",
        "    full = (key, trace_config(), signature(*args))",
        "    full = (key, signature(*args))",
        "tests/engine/test_fit.py",
    ),
    (
        "AdEMAMix beta3 schedule endpoints swapped",
        "gdopt/optimizers/adam_family.py",
        "log_start, log_end = float(np.log(beta_start)), float(np.log(beta_end))",
        "log_start, log_end = float(np.log(beta_end)), float(np.log(beta_start))",
        "tests/test_optimizers.py -k ademamix",
    ),
    (
        "Adam drops eps_root",
        "gdopt/transforms/moments.py",
        "v_hat = v / c2.astype(v.dtype)\n            u = div(m_hat, add(jnp.sqrt(add(v_hat, eps_root)), eps))",
        "v_hat = v / c2.astype(v.dtype)\n            u = div(m_hat, add(jnp.sqrt(v_hat), eps))",
        "tests/test_optimizers.py -k parity-adam",
    ),
    (
        "Adam drops the bias correction of the second moment",
        "gdopt/transforms/moments.py",
        "            v_hat = v / c2.astype(v.dtype)",
        "            v_hat = v",
        "tests/test_optimizers.py -k adam",
    ),
    (
        "SGD ascends",
        "gdopt/transforms/scaling.py",
        "    sign = -1 if flip_sign else 1",
        "    sign = 1 if flip_sign else -1",
        "tests/test_optimizers.py -k sgd",
    ),
    (
        "Nesterov flag ignored by trace",
        "gdopt/transforms/moments.py",
        "        if nesterov:\n            out = tree_map(lambda g, t: cast_like(add(g, mul(decay, t)), g)",
        "        if False:\n            out = tree_map(lambda g, t: cast_like(add(g, mul(decay, t)), g)",
        "tests/test_optimizers.py -k sgd",
    ),
    (
        "named optimizers ignore the values in their state",
        "gdopt/hyperparams.py",
        "        values = values_at(count, state.hyperparams)",
        "        values = values_at(count, {k: _as_value(v, dtype) for k, v in constants.items()})",
        "tests/test_hyperparams.py tests/test_optimizers.py -k set_hyperparams",
    ),
    (
        "set_hyperparams does not validate",
        "gdopt/hyperparams.py",
        "                node.check(k, v)",
        "                pass",
        "tests/test_optimizers.py -k bad_hyperparameters",
    ),
    (
        "LAMB wrongly packable",
        "gdopt/transforms/normalization.py",
        "@transform(packable=False)\ndef scale_by_trust_ratio(",
        "@transform(packable=True)\ndef scale_by_trust_ratio(",
        "tests/test_optimizers.py -k packab",
    ),
    (
        "a rebuild from the state's values checks them (a warm-up from 0 refused)",
        "gdopt/_validation.py",
        "        checking = not _REBUILDING.get()",
        "        checking = True",
        "tests/test_hyperparams.py -k reaching_zero",
    ),
    (
        "contrib.sam's adversarial step descends instead of ascending",
        "gdopt/wrappers.py",
        "        adv_updates = negate(adv_updates)",
        "        adv_updates = adv_updates",
        "tests/test_wrappers.py -k contrib_sam_transparent",
    ),
    (
        "fit restores a checkpoint's PRNG key committed to one device",
        "gdopt/engine/fit.py",
        '        stored = _checks.like_key(np.asarray(tree["key"]), key)',
        '        stored = _checks.like_key(tree["key"], key)',
        "tests/test_sharding.py -k resumes_on_the_mesh",
    ),
]


def run(mutation, keep: bool = False) -> bool:
    """Apply one mutation to a scratch copy and run its tests; True when they fail."""
    name, path, original, mutated, tests = mutation
    with tempfile.TemporaryDirectory(prefix="gdopt-mutant-") as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(
            ROOT, copy, ignore=shutil.ignore_patterns(".venv", ".ci-venv", ".git", "__pycache__")
        )
        source = (copy / path).read_text()
        if source.count(original) != 1:
            print(f"STALE     {name}: the original text is not found once in {path}")
            return False
        (copy / path).write_text(source.replace(original, mutated))
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-n", "0"]
        cmd += tests.split()
        proc = subprocess.run(cmd, cwd=copy, capture_output=True, text=True)
        caught = proc.returncode != 0
        print(f"{'CAUGHT  ' if caught else 'SURVIVED'}  {name}  [{tests}]")
        return caught


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-k", default="", help="only mutations whose name contains this")
    args = p.parse_args()
    chosen = [m for m in MUTATIONS if args.k.lower() in m[0].lower()]
    caught = sum(run(m) for m in chosen)
    print(f"{caught} of {len(chosen)} mutations caught")
    sys.exit(0 if caught == len(chosen) else 1)


if __name__ == "__main__":
    main()
