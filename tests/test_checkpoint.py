"""``gdopt/checkpoint.py``: save/restore on orbax-checkpoint, exactly and checked.

Round trips (NamedTuple optimizer states come back as their types, bit-identical), the
checks before loading (structure, shape, dtype, with the key path), detection of truncated,
corrupted and incomplete checkpoints, ``max_to_keep``, and a process SIGKILLed at random
points while saving (the latest complete checkpoint always restores)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdopt
from gdopt import checkpoint
from gdopt.checkpoint import CheckpointError
from tests.helpers import bad_inputs, subprocess_env

pytest.importorskip("orbax.checkpoint")


def _state():
    params = {"w": jnp.arange(3.0), "layers": [jnp.ones((2, 2)), jnp.zeros((), jnp.bfloat16)]}
    opt = gdopt.adam(1e-3)
    state = opt.init(params)
    updates, state = opt.update(jax.tree.map(jnp.ones_like, params), state, params)
    return state


def _assert_identical(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_keeps_types_and_bits(tmp_path):
    state = _state()
    path = checkpoint.save(tmp_path, state, step=3)
    assert path == tmp_path.resolve() / "3"
    back = checkpoint.restore(tmp_path, like=state)
    _assert_identical(back, state)
    assert type(back) is type(state) and type(back[0]) is type(state[0])
    assert int(back[0].count) == 1
    # like may be abstract
    back = checkpoint.restore(tmp_path, like=jax.eval_shape(lambda: state))
    _assert_identical(back, state)


def test_latest_step_all_steps_and_max_to_keep(tmp_path):
    assert checkpoint.latest_step(tmp_path / "none") is None
    assert checkpoint.all_steps(tmp_path) == []
    for step in (1, 5, 9):
        checkpoint.save(tmp_path, {"x": jnp.full(2, float(step))}, step=step, max_to_keep=2)
    assert checkpoint.all_steps(tmp_path) == [5, 9]
    assert checkpoint.latest_step(tmp_path) == 9
    like = {"x": jnp.zeros(2)}
    assert checkpoint.restore(tmp_path, like=like)["x"].tolist() == [9.0, 9.0]
    assert checkpoint.restore(tmp_path, like=like, step=5)["x"].tolist() == [5.0, 5.0]
    with pytest.raises(CheckpointError, match=r"no complete checkpoint for step 1 .*\[5, 9\]"):
        checkpoint.restore(tmp_path, like=like, step=1)
    with pytest.raises(ValueError, match="step 9 already exists"):
        checkpoint.save(tmp_path, like, step=9)


@pytest.mark.parametrize(
    "like, match",
    [
        (
            {"x": jnp.zeros(3), "y": jnp.zeros(())},
            r"leaf \['x'\] has shape \(2,\), like's has \(3,\)",
        ),
        (
            {"x": jnp.zeros(2, jnp.int32), "y": jnp.zeros(())},
            r"\['x'\] has dtype float32, like's has int32",
        ),
        ({"x": jnp.zeros(2), "z": jnp.zeros(())}, r"it has \['y'\] where like has \['z'\]"),
        ({"x": jnp.zeros(2)}, r"the checkpoint has more leaves .* \['y'\]"),
        ((jnp.zeros(2), jnp.zeros(())), "structure differs"),
    ],
)
def test_restore_refuses_a_different_structure_shape_or_dtype(tmp_path, like, match):
    checkpoint.save(tmp_path, {"x": jnp.ones(2), "y": jnp.ones(())}, step=0)
    with pytest.raises(CheckpointError, match=match):
        checkpoint.restore(tmp_path, like=like)


def _biggest_file(step_dir):
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.name != checkpoint.CHECKSUM]
    return max(files, key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_restore_detects_truncation_and_corruption(tmp_path, damage):
    state = {"x": jnp.arange(1000.0)}
    step_dir = checkpoint.save(tmp_path, state, step=7)
    victim = _biggest_file(step_dir)
    data = victim.read_bytes()
    if damage == "truncate":
        victim.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        victim.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    else:
        victim.unlink()
    match = "is missing its file" if damage == "delete" else "does not match its checksum"
    with pytest.raises(CheckpointError, match=match):
        checkpoint.restore(tmp_path, like=state)


def test_a_step_without_its_checksum_is_not_a_step(tmp_path):
    checkpoint.save(tmp_path, {"x": jnp.ones(2)}, step=1)
    step_dir = checkpoint.save(tmp_path, {"x": jnp.full(2, 2.0)}, step=2)
    (step_dir / checkpoint.CHECKSUM).unlink()  # as if killed before the checksum was written
    assert checkpoint.latest_step(tmp_path) == 1
    assert checkpoint.restore(tmp_path, like={"x": jnp.zeros(2)})["x"].tolist() == [1.0, 1.0]
    # the remains are replaced by the next save of that step
    checkpoint.save(tmp_path, {"x": jnp.full(2, 3.0)}, step=2)
    assert checkpoint.restore(tmp_path, like={"x": jnp.zeros(2)})["x"].tolist() == [3.0, 3.0]


def test_bad_arguments(tmp_path):
    with pytest.raises(CheckpointError, match="no complete checkpoint in"):
        checkpoint.restore(tmp_path, like={"x": jnp.zeros(2)})
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        checkpoint.save(tmp_path, {"x": jnp.zeros(2)}, step=-1)
    with pytest.raises(TypeError, match="directory must be a path"):
        checkpoint.save(3, {"x": jnp.zeros(2)}, step=0)
    with pytest.raises(TypeError, match=r"state\['k'\] is a typed PRNG key"):
        checkpoint.save(tmp_path, {"k": jax.random.key(0)}, step=0)


# ----------------------------------------------------------------------------- bad-input battery

import hypothesis  # noqa: E402
import hypothesis.strategies as st  # noqa: E402

BAD_INPUTS = bad_inputs("tests/test_checkpoint.py")


@pytest.fixture(scope="module")
def saved_state(tmp_path_factory):
    d = tmp_path_factory.mktemp("battery")
    state = _state()
    checkpoint.save(d, state, step=1)
    return d, state


def _mutate(state, how: str, i: int):
    flat, treedef = jax.tree_util.tree_flatten_with_path(state)
    paths = [jax.tree_util.keystr(p) for p, _ in flat]
    leaves = [x for _, x in flat]
    i %= len(leaves)
    if how == "shape":
        leaves[i] = jnp.zeros((*np.shape(leaves[i]), 2), leaves[i].dtype)
    elif how == "dtype":
        d = leaves[i].dtype
        leaves[i] = leaves[i].astype(jnp.float16 if d != jnp.float16 else jnp.float32)
    elif how == "scalar":
        leaves[i] = jnp.zeros((), leaves[i].dtype) if np.ndim(leaves[i]) else jnp.zeros(3)
    else:
        return {"wrapped": state} if how == "wrap" else list(leaves), "structure"
    return jax.tree.unflatten(treedef, leaves), paths[i]


@hypothesis.settings(max_examples=30, deadline=None, derandomize=True, database=None)
@hypothesis.given(
    how=st.sampled_from(["shape", "dtype", "scalar", "wrap", "flat"]), i=st.integers(0, 50)
)
def test_random_mismatched_like_is_refused_naming_the_key_path(saved_state, how, i):
    d, state = saved_state
    like, path = _mutate(state, how, i)
    BAD_INPUTS.add(f"restore:{how}:{path}")
    with pytest.raises(CheckpointError) as info:
        checkpoint.restore(d, like=like)
    if path != "structure":
        assert path in str(info.value)


@hypothesis.settings(max_examples=12, deadline=None, derandomize=True, database=None)
@hypothesis.given(offset=st.floats(0.0, 0.999), flip=st.integers(1, 255))
def test_random_corruption_is_detected(tmp_path_factory, offset, flip):
    d = tmp_path_factory.mktemp("corrupt")
    state = {"x": jnp.arange(256.0)}
    step_dir = checkpoint.save(d, state, step=0)
    files = sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != checkpoint.CHECKSUM)
    victim = files[int(offset * len(files))]
    data = bytearray(victim.read_bytes())
    hypothesis.assume(len(data) > 0)
    at = int(offset * len(data)) % len(data)
    data[at] ^= flip
    victim.write_bytes(bytes(data))
    BAD_INPUTS.add(f"corrupt:{victim.name}:{at}:{flip}")
    with pytest.raises(CheckpointError, match="corrupted"):
        checkpoint.restore(d, like=state)


# The saving process: it imports JAX and orbax once, then forks one child per trial (before
# any JAX backend exists in the parent). Each child first restores the latest checkpoint
# (the check of the previous kill), reports it, and saves new steps in a loop until the
# parent SIGKILLs it at a random moment.
_KILLER = textwrap.dedent(
    """
    import os, random, signal, sys, time
    import numpy as np
    directory, trials = sys.argv[1], int(sys.argv[2])
    import jax, jax.numpy as jnp
    from gdopt import checkpoint

    def child(write_fd):
        like = {"a": np.zeros((64, 64), np.float32), "n": np.zeros((), np.int32)}
        latest = checkpoint.latest_step(directory)
        ok = 1
        if latest is not None:
            back = checkpoint.restore(directory, like=like)
            ok = int(int(back["n"]) == latest and float(back["a"][0, 0]) == latest)
        step = 0 if latest is None else latest + 1
        while True:
            state = {"a": np.full((64, 64), step, np.float32), "n": np.asarray(step, np.int32)}
            checkpoint.save(directory, state, step=step, max_to_keep=3)
            if step == (0 if latest is None else latest + 1):  # one save done: kill from now
                os.write(write_fd, f"{latest} {ok}\\n".encode())
            step += 1

    rng = random.Random(0)
    for trial in range(trials + 1):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                child(w)
            finally:
                os._exit(1)
        os.close(w)
        line = b""
        while not line.endswith(b"\\n"):
            chunk = os.read(r, 100)
            if not chunk:
                break
            line += chunk
        os.close(r)
        print(trial, line.decode().strip(), flush=True)
        if trial < trials:
            time.sleep(rng.uniform(0.0, 0.25))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    """
)


def test_sigkill_during_saves_leaves_the_latest_checkpoint_restorable(tmp_path):
    trials = 20
    env = subprocess_env()  # the suite's warning filters: a warning fails the test
    out = subprocess.run(
        [sys.executable, "-c", _KILLER, str(tmp_path), str(trials)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line.split() for line in out.stdout.splitlines()]
    assert len(lines) == trials + 1, out.stdout
    # trial 0 starts empty; every later child found a complete latest checkpoint that
    # restored to the values of its step
    assert lines[0][1:] == ["None", "1"]
    restored = [(int(t), latest, ok) for t, latest, ok in lines[1:]]
    assert all(ok == "1" for _, _, ok in restored), out.stdout
    assert all(latest != "None" for _, latest, _ in restored), out.stdout
    steps = [int(latest) for _, latest, _ in restored]
    assert steps == sorted(steps)  # never went back
