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
        "        ok = jnp.isfinite(loss) & ~stopped",
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
        "epoch_batches(jax.random.fold_in(key, s.epoch), data",
        "epoch_batches(key, data",
        "tests/engine/test_core.py",
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
        "AdEMAMix beta3 schedule endpoints swapped",
        "gdopt/optimizers/adam_family.py",
        "log_end = jnp.log(beta_end)",
        "log_end = jnp.log(beta_start)",
        "tests/test_optimizers.py -k ademamix",
    ),
    (
        "Adam drops eps_root",
        "gdopt/transforms/moments.py",
        "u = m_hat / (jnp.sqrt(v_hat + eps_root) + eps)",
        "u = m_hat / (jnp.sqrt(v_hat) + eps)",
        "tests/test_optimizers.py -k parity-adam",
    ),
    (
        "Adam drops the bias correction of the second moment",
        "gdopt/transforms/moments.py",
        "        c2 = num.bias_correction_factor(b2, count)",
        "        c2 = jnp.ones((), jnp.float32)",
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
        "        if nesterov:\n            out = tree_map(lambda g, t: cast_like(g + decay * t, g), updates, new_trace)",
        "        if False:\n            out = tree_map(lambda g, t: cast_like(g + decay * t, g), updates, new_trace)",
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
