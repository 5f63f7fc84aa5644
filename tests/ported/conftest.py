"""The programs in this folder are scripts, run by ``tests/test_ported.py`` (once with optax,
once with gdopt); pytest must not import them as modules (``--doctest-modules`` would)."""

collect_ignore_glob = ["*.py"]
