"""The ``gdopt`` command line: ``gdopt compare``, ``gdopt train`` and ``gdopt bench``.

``gdopt compare`` trains one problem's model with batch gradient descent, per-example SGD,
mini-batch SGD, momentum, Adam and RMSprop from the same initial parameters and prints a
table (and writes ``compare.json`` and ``compare.png``). ``gdopt train`` runs one optimizer
with a progress bar. ``gdopt bench`` runs the benchmark scripts of a source checkout.
``python -m gdopt`` is the same program.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import inspect
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = ["main", "optimizer_choices", "COMPARE_METHODS"]


class _Method(NamedTuple):
    name: str
    optimizer: str
    batch_size: int | None
    lr_factor: float
    momentum: float | None = None


COMPARE_METHODS: tuple[_Method, ...] = (
    _Method("batch GD", "sgd", None, 5.0),
    _Method("SGD", "sgd", 1, 0.1),
    _Method("mini-batch SGD", "sgd", 32, 1.0),
    _Method("momentum", "sgd", 32, 0.5, 0.9),
    _Method("Adam", "adam", 32, 0.03),
    _Method("RMSprop", "rmsprop", 32, 0.01),
)
"""The methods of ``gdopt compare``: name, optimizer, batch size (``None``: full batch),
learning rate as a multiple of the problem's ``default_learning_rate`` (the SGD rate at batch
size 32; 0.1 for the digits problems, so Adam gets 3e-3 and RMSprop 1e-3 there), momentum.

The factors were tuned on ``digits-mlp``: full-batch gradient descent takes one step per
epoch, so it takes larger steps (5x) and still lags the others in equal epochs; per-example
SGD takes 32x as many steps per epoch and so a 10x smaller rate; heavy-ball momentum 0.9
multiplies the effective step by 10, so 0.5x is an effective 5x step.
"""


def optimizer_choices() -> dict[str, Callable[..., Any]]:
    """The named optimizers the CLI offers: ``{name: factory}``, sorted by name.

    Found by introspection of :data:`gdopt.optimizers.__all__`: every function whose first
    parameter is ``learning_rate`` and whose other parameters all have defaults (so helpers
    such as ``named_optimizer`` and schedule builders are left out, and optimizers added later
    appear automatically).

    >>> "adam" in optimizer_choices() and "named_optimizer" not in optimizer_choices()
    True
    """
    from gdopt import optimizers

    out = {}
    for name in optimizers.__all__:
        fn = getattr(optimizers, name)
        if not inspect.isfunction(fn):
            continue
        params = list(inspect.signature(fn).parameters.values())
        if not params or params[0].name != "learning_rate":
            continue
        required = [
            p
            for p in params[1:]
            if p.default is inspect.Parameter.empty
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        ]
        if not required:
            out[name] = fn
    return dict(sorted(out.items()))


class _UsageError(Exception):
    """A bad command line: printed as one ``gdopt: error:`` line, exit code 2."""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _batch_size_arg(text: str) -> int | str:
    if text.lower() in ("full", "none"):
        return "full"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'full', got {text!r}") from None


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``gdopt train: error: ... (see ... --help)``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _build_parser() -> argparse.ArgumentParser:
    from gdopt import __version__
    from gdopt.problems import PROBLEM_NAMES

    parser = _Parser(
        prog="gdopt",
        description="Gradient-based learning in pure JAX: compare optimizers, train, benchmark.",
    )
    parser.add_argument("--version", action="version", version=f"gdopt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cmp = sub.add_parser(
        "compare",
        help="train one problem with GD, SGD, mini-batch SGD, momentum, Adam and RMSprop",
        description="Train a problem's model with batch gradient descent, per-example SGD, "
        "mini-batch SGD, momentum, Adam and RMSprop from the same initial parameters; print "
        "a table and write DIR/compare.json (and DIR/compare.png with matplotlib).",
    )
    cmp.add_argument(
        "--problem",
        default="digits-mlp",
        metavar="NAME",
        help=f"one of {', '.join(PROBLEM_NAMES)} (default: digits-mlp)",
    )
    cmp.add_argument(
        "--epochs", type=int, default=None, help="epochs per method (default: the problem's)"
    )
    cmp.add_argument("--seed", type=int, default=0, help="seed of init, data and shuffling")
    cmp.add_argument(
        "--out",
        default="gdopt-results",
        metavar="DIR",
        help="output directory (default: ./gdopt-results)",
    )
    cmp.add_argument("--no-plot", action="store_true", help="do not write compare.png")
    cmp.set_defaults(func=_compare)

    tr = sub.add_parser(
        "train",
        help="train one problem with one optimizer",
        description="Train a problem's model with one named optimizer (progress bar on stderr).",
    )
    tr.add_argument("--problem", default="digits-mlp", metavar="NAME", help="problem name")
    tr.add_argument(
        "--optimizer",
        default="sgd",
        metavar="NAME",
        help="a named gdopt optimizer taking learning_rate (default: sgd)",
    )
    tr.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        metavar="X",
        help="learning rate (default: the problem's SGD rate)",
    )
    tr.add_argument("--epochs", type=int, default=None, help="default: the problem's")
    tr.add_argument(
        "--batch-size",
        type=_batch_size_arg,
        default=None,
        metavar="B",
        help="examples per step, or 'full' for batch gradient descent (default: the problem's)",
    )
    tr.add_argument("--seed", type=int, default=0, help="seed of init, data and shuffling")
    tr.add_argument(
        "--tol", type=float, default=None, help="stop when the relative loss change < TOL"
    )
    tr.add_argument(
        "--patience", type=int, default=1, help="epochs below --tol needed to stop (default 1)"
    )
    tr.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    tr.set_defaults(func=_train)

    bn = sub.add_parser(
        "bench",
        help="run benchmarks/NAME.py of a source checkout (all of them without NAME)",
        description="Run `python -m benchmarks.NAME` for each NAME (all benchmarks when none "
        "is given) from the current directory, which must be the gdopt source checkout.",
    )
    bn.add_argument("names", nargs="*", metavar="NAME", help="benchmark module names")
    bn.set_defaults(func=_bench)
    _add_tuning_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``gdopt`` command line.

    Args:
      argv: the arguments (default ``sys.argv[1:]``).

    Returns:
      The exit status: 0 on success, 2 for a bad command line (unknown name, bad number:
      one ``gdopt: error:`` line on stderr, no traceback), 1 when training diverged, a
      benchmark failed or the results could not be written (output paths are checked
      before any training), 130 on Ctrl-C (one line saying where the results so far are).

    >>> main(["train", "--optimizer", "nope"])
    2
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version and argparse's own usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:  # Ctrl-C outside a training loop (which returns its state)
        print("gdopt: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    except (_UsageError, ValueError, TypeError) as e:
        print(f"gdopt: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. --out names a file or a read-only place
        print(f"gdopt: error: {_one_line(e)}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------- shared helpers


def _problem(name: str, seed: int):
    from gdopt.problems import PROBLEM_NAMES, get_problem

    if name not in PROBLEM_NAMES:
        raise _UsageError(f"unknown problem {name!r}; choose from: {', '.join(PROBLEM_NAMES)}")
    if seed < 0:
        raise _UsageError(f"--seed must be >= 0, got {seed}")
    return get_problem(name, seed=seed)


def _positive_epochs(epochs: int) -> int:
    if epochs < 1:
        raise _UsageError(f"--epochs must be >= 1, got {epochs}")
    return epochs


def _keys(seed: int):
    import jax

    root = jax.random.PRNGKey(seed)
    return jax.random.fold_in(root, 0), jax.random.fold_in(root, 1)


def _final(values: np.ndarray) -> float | None:
    """The last entry (nan/inf kept), or ``None`` when the metric was not recorded."""
    return float(values[-1]) if len(values) else None


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _writable_dir(path: Path) -> Path:
    """``path`` as an existing, writable directory (created now), so that a bad ``--out``
    fails before any training, not after it."""
    if path.exists() and not path.is_dir():
        raise OSError(f"--out {str(path)!r} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"--out {str(path)!r} cannot be created: {e.strerror or e}") from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise OSError(f"--out {str(path)!r} is not writable")
    return path


def _atomic_write(path: Path, write: Callable[[Any], None], binary: bool = False) -> None:
    """Write ``path`` through a temporary file in its directory and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual mode
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _machine() -> dict[str, Any]:
    import jax

    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax_backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }


def _versions() -> dict[str, str]:
    import jax

    from gdopt import __version__

    return {
        "gdopt": __version__,
        "jax": jax.__version__,
        "jaxlib": importlib.metadata.version("jaxlib"),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


# ---------------------------------------------------------------- gdopt compare


def _compare(args: argparse.Namespace) -> int:
    import jax

    import gdopt

    start = time.perf_counter()
    problem = _problem(args.problem, args.seed)
    epochs = _positive_epochs(problem.default_epochs if args.epochs is None else args.epochs)
    out_dir = _writable_dir(Path(args.out))  # before any training
    init_key, shuffle_key = _keys(args.seed)
    params = problem.init_params(init_key)
    base_lr = float(problem.default_learning_rate)
    n = len(jax.tree.leaves(problem.train)[0])
    choices = optimizer_choices()

    print(
        f"gdopt compare: {problem.name} ({problem.description}) {n} training examples, "
        f"{epochs} epochs per method",
        file=sys.stderr,
    )
    results = []
    interrupted = None  # the method Ctrl-C stopped
    for i, m in enumerate(COMPARE_METHODS, 1):
        lr = base_lr * m.lr_factor
        batch = m.batch_size if m.batch_size is None or m.batch_size <= n else n
        kwargs = {} if m.momentum is None else {"momentum": m.momentum}
        args_text = ", ".join(f"{k}={v:g}" for k, v in {"learning_rate": lr, **kwargs}.items())
        label = f"{m.optimizer}({args_text})"
        print(
            f"[{i}/{len(COMPARE_METHODS)}] {m.name:<15} {label}, batch "
            f"{'full' if batch is None else batch} ...",
            end="",
            file=sys.stderr,
            flush=True,
        )
        try:
            res = gdopt.fit(
                problem.loss_fn,
                params,
                choices[m.optimizer](lr, **kwargs),
                problem.train,
                epochs=epochs,
                batch_size=batch,
                key=shuffle_key,
                eval_data=problem.test,
                accuracy_fn=problem.accuracy_fn if problem.test is not None else None,
            )
        except KeyboardInterrupt:  # Ctrl-C while compiling: keep what the others gave
            print(" interrupted", file=sys.stderr)
            interrupted = m.name
            break
        h = res.history
        run_time = max(res.wall_time - res.compile_time, 1e-9)
        record = {
            "method": m.name,
            "optimizer": m.optimizer,
            "hyperparams": {"learning_rate": lr, **kwargs},
            "batch_size": batch,
            "learning_rate": lr,
            "final_train_loss": _final(h.train_loss),
            "test_loss": _final(h.eval_loss),
            "test_accuracy": _final(h.eval_accuracy),
            "epochs_run": res.epochs_run,
            "steps_run": res.steps_run,
            "wall_time_s": res.wall_time,
            "compile_time_s": res.compile_time,
            "steps_per_s": res.steps_run / run_time,
            "converged": res.converged,
            "diverged": res.diverged,
            "stop_reason": res.stop_reason,
            "history": {
                "epochs": h.epochs,
                "train_loss": h.train_loss,
                "test_loss": h.eval_loss,
                "test_accuracy": h.eval_accuracy,
            },
        }
        results.append(record)
        acc = record["test_accuracy"]
        print(
            f" loss {_fmt(record['final_train_loss'], '.4g')}"
            + (f", test accuracy {acc:.4f}" if acc is not None else "")
            + f", {res.wall_time:.1f} s"
            + (f" ({res.stop_reason})" if res.diverged else ""),
            file=sys.stderr,
            flush=True,
        )
        if res.interrupted:
            interrupted = m.name
            break

    headers = [
        "method",
        "optimizer",
        "batch",
        "lr",
        "train loss",
        "test loss",
        "test acc",
        "epochs",
        "wall s",
        "steps/s",
    ]
    rows = [
        [
            r["method"],
            r["optimizer"]
            + (f"+m{r['hyperparams']['momentum']:g}" if "momentum" in r["hyperparams"] else ""),
            "full" if r["batch_size"] is None else str(r["batch_size"]),
            f"{r['learning_rate']:g}",
            _fmt(r["final_train_loss"], ".4g"),
            _fmt(r["test_loss"], ".4g"),
            _fmt(r["test_accuracy"], ".4f"),
            str(r["epochs_run"]),
            f"{r['wall_time_s']:.2f}",
            f"{r['steps_per_s']:,.0f}",
        ]
        for r in results
    ]
    print(_table(headers, rows, right=set(range(2, len(headers)))))
    print(
        "wall s includes compilation; steps/s excludes it. Equal epochs are not equal work: "
        "full-batch GD takes one step per epoch, SGD one per example."
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "command": "gdopt compare",
        "problem": problem.name,
        "description": problem.description,
        "epochs": epochs,
        "seed": args.seed,
        "train_examples": n,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
        "machine": _machine(),
        "methods": results,
        "total_wall_time_s": time.perf_counter() - start,
    }
    json_path = out_dir / "compare.json"
    _atomic_write(json_path, lambda f: json.dump(_jsonable(report), f, indent=2))
    written = [str(json_path)]
    if not args.no_plot:
        png = _plot(results, problem.name, out_dir / "compare.png")
        if png is not None:
            written.append(str(png))
    print(f"wrote {', '.join(written)}")
    if interrupted is not None:
        print(
            f"gdopt: interrupted (Ctrl-C) during {interrupted}; the results so far are in "
            f"{json_path}",
            file=sys.stderr,
        )
        return 130
    return 0


def _plot(results: list[dict], title: str, path: Path) -> Path | None:
    """Train loss per epoch (log y), one line per method; ``None`` without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return None
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for r in results:
        h = r["history"]
        loss = np.asarray(h["train_loss"], dtype=float)
        ok = np.isfinite(loss) & (loss > 0)
        ax.plot(np.asarray(h["epochs"])[ok], loss[ok], marker=".", label=r["method"])
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean train loss")
    ax.set_title(f"gdopt compare: {title}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120), binary=True)
    return path


# ---------------------------------------------------------------- gdopt train


def _train(args: argparse.Namespace) -> int:
    import gdopt
    from gdopt.batching import check_batch_size, dataset_size

    problem = _problem(args.problem, args.seed)
    choices = optimizer_choices()
    if args.optimizer not in choices:
        raise _UsageError(
            f"unknown optimizer {args.optimizer!r}; choose from: {', '.join(choices)}"
        )
    lr = problem.default_learning_rate if args.learning_rate is None else args.learning_rate
    epochs = _positive_epochs(problem.default_epochs if args.epochs is None else args.epochs)
    batch = problem.default_batch_size if args.batch_size is None else args.batch_size
    batch = None if batch == "full" else batch
    optimizer = choices[args.optimizer](lr)
    check_batch_size(batch, dataset_size(problem.train))
    if args.tol is not None and not (math.isfinite(args.tol) and args.tol > 0):
        raise _UsageError(f"--tol must be a finite number > 0, got {args.tol}")
    if args.patience < 1:
        raise _UsageError(f"--patience must be >= 1, got {args.patience}")
    init_key, shuffle_key = _keys(args.seed)
    accuracy_fn = problem.accuracy_fn if problem.test is not None else None
    print(
        f"gdopt train: {problem.name} with {args.optimizer}(learning_rate={lr:g}), batch "
        f"{'full' if batch is None else batch}, {epochs} epochs",
        file=sys.stderr,
    )
    res = gdopt.fit(
        problem.loss_fn,
        problem.init_params(init_key),
        optimizer,
        problem.train,
        epochs=epochs,
        batch_size=batch,
        key=shuffle_key,
        eval_data=problem.test,
        accuracy_fn=accuracy_fn,
        tol=args.tol,
        patience=args.patience,
        progress=not args.no_progress,
    )
    h = res.history
    print(f"final train loss: {_fmt(_final(h.train_loss), '.6g')}")
    if len(h.eval_loss):
        print(f"test loss:        {_fmt(_final(h.eval_loss), '.6g')}")
    if len(h.eval_accuracy):
        print(f"test accuracy:    {_fmt(_final(h.eval_accuracy), '.4f')}")
    print(
        f"epochs run:       {res.epochs_run} ({res.steps_run} steps, {res.wall_time:.2f} s "
        f"incl. {res.compile_time:.2f} s compile)"
    )
    print(f"stop reason:      {res.stop_reason}")
    if res.interrupted:
        print(
            f"gdopt: interrupted (Ctrl-C) after epoch {res.epochs_run} of {epochs}; the results "
            "so far are printed above",
            file=sys.stderr,
        )
        return 130
    return 1 if res.diverged else 0


# ---------------------------------------------------------------- gdopt bench


def _bench(args: argparse.Namespace) -> int:
    root = Path.cwd() / "benchmarks"
    if not (root / "__init__.py").is_file():
        print(
            "gdopt: benchmarks live in the gdopt source checkout: run `gdopt bench` from its "
            "root (the directory holding benchmarks/__init__.py).",
            file=sys.stderr,
        )
        return 2
    available = sorted(
        p.stem for p in root.glob("*.py") if not p.name.startswith("_") and p.is_file()
    )
    unknown = [n for n in args.names if n not in available]
    if unknown:
        raise _UsageError(
            f"unknown benchmark {unknown[0]!r}; choose from: {', '.join(available) or '(none)'}"
        )
    status = 0
    for name in args.names or available:
        print(f"gdopt bench: python -m benchmarks.{name}", file=sys.stderr, flush=True)
        rc = subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], check=False).returncode
        if rc != 0:
            print(f"gdopt bench: benchmarks.{name} exited with status {rc}", file=sys.stderr)
            status = 1
    return status


# ---------------------------------------------------------------- gdopt sweep, gdopt lr-find


def _add_tuning_parsers(sub: Any) -> None:
    """The ``sweep`` and ``lr-find`` subcommands."""
    sw = sub.add_parser(
        "sweep",
        help="train one problem at many hyperparameter values in one compiled program",
        description="Sweep a named optimizer's hyperparameters on a problem (all runs in one "
        "vectorised, compiled program, gdopt.sweep); print the runs sorted by test loss and "
        "write DIR/sweep.json and DIR/sweep.png (a heat map).",
    )
    sw.add_argument("--problem", default="digits-mlp", metavar="NAME", help="problem name")
    sw.add_argument("--optimizer", default="adam", metavar="NAME", help="default: adam")
    sw.add_argument(
        "--learning-rate",
        default="1e-4:1e-1:16",
        metavar="SPEC",
        help="LO:HI:N (N log-spaced values) or a comma-separated list (default 1e-4:1e-1:16)",
    )
    sw.add_argument(
        "--hyperparam",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="another hyperparameter to cross with the rates, e.g. b1=0.8,0.9,0.95 (repeatable)",
    )
    sw.add_argument("--seeds", type=int, default=1, help="seeds per configuration (default 1)")
    sw.add_argument("--epochs", type=int, default=None, help="default: the problem's")
    sw.add_argument(
        "--batch-size",
        type=_batch_size_arg,
        default=None,
        metavar="B",
        help="examples per step, or 'full' (default: the problem's)",
    )
    sw.add_argument("--seed", type=int, default=0, help="seed of the data split and the keys")
    sw.add_argument("--out", default="gdopt-results", metavar="DIR", help="output directory")
    sw.add_argument("--no-plot", action="store_true", help="do not write sweep.png")
    sw.set_defaults(func=_sweep)

    lf = sub.add_parser(
        "lr-find",
        help="the learning-rate range test: suggest a learning rate",
        description="Run the learning-rate range test (gdopt.lr_find) on a problem; print the "
        "suggested rates and write DIR/lr_find.json and DIR/lr_find.png (the curve).",
    )
    lf.add_argument("--problem", default="digits-mlp", metavar="NAME", help="problem name")
    lf.add_argument("--optimizer", default="adam", metavar="NAME", help="default: adam")
    lf.add_argument("--start-lr", type=float, default=1e-7, metavar="X", help="default 1e-7")
    lf.add_argument("--end-lr", type=float, default=10.0, metavar="X", help="default 10")
    lf.add_argument("--num-steps", type=int, default=100, metavar="N", help="default 100")
    lf.add_argument(
        "--batch-size",
        type=_batch_size_arg,
        default=None,
        metavar="B",
        help="examples per step, or 'full' (default: the problem's)",
    )
    lf.add_argument(
        "--suggestion",
        default="valley",
        metavar="RULE",
        help="valley, steep or minimum (default valley)",
    )
    lf.add_argument("--seed", type=int, default=0, help="seed of init, data and shuffling")
    lf.add_argument("--out", default="gdopt-results", metavar="DIR", help="output directory")
    lf.add_argument("--no-plot", action="store_true", help="do not write lr_find.png")
    lf.set_defaults(func=_lr_find)


def _values_spec(text: str, what: str) -> list[float]:
    """``LO:HI:N`` (N log-spaced values, both ends included) or ``a,b,c``."""
    try:
        if ":" in text:
            lo, hi, n = text.split(":")
            lo_f, hi_f, count = float(lo), float(hi), int(n)
            if not (0 < lo_f < hi_f and math.isfinite(hi_f)) or count < 2:
                raise ValueError
            return [float(v) for v in np.geomspace(lo_f, hi_f, count)]
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise _UsageError(
            f"{what} must be LO:HI:N (0 < LO < HI, N >= 2 log-spaced values) or a "
            f"comma-separated list of numbers, got {text!r}"
        ) from None
    if not values:
        raise _UsageError(f"{what} has no values: {text!r}")
    return values


def _tuning_setup(args: argparse.Namespace):
    problem = _problem(args.problem, args.seed)
    choices = optimizer_choices()
    if args.optimizer not in choices:
        raise _UsageError(
            f"unknown optimizer {args.optimizer!r}; choose from: {', '.join(choices)}"
        )
    batch = problem.default_batch_size if args.batch_size is None else args.batch_size
    batch = None if batch == "full" else batch
    return problem, choices[args.optimizer], batch


def _sweep(args: argparse.Namespace) -> int:
    import jax

    import gdopt

    problem, factory, batch = _tuning_setup(args)
    epochs = _positive_epochs(problem.default_epochs if args.epochs is None else args.epochs)
    if args.seeds < 1:
        raise _UsageError(f"--seeds must be >= 1, got {args.seeds}")
    grid = {"learning_rate": _values_spec(args.learning_rate, "--learning-rate")}
    for item in args.hyperparam:
        name, sep, spec = item.partition("=")
        if not sep or not name.strip():
            raise _UsageError(f"--hyperparam must be NAME=SPEC, got {item!r}")
        grid[name.strip()] = _values_spec(spec, f"--hyperparam {name.strip()}")
    optimizer = factory(grid["learning_rate"][0])
    evaluated = problem.test is not None
    print(
        f"gdopt sweep: {problem.name} with {args.optimizer}, "
        + ", ".join(f"{k} x{len(v)}" for k, v in grid.items())
        + f", {args.seeds} seed(s), batch {'full' if batch is None else batch}, {epochs} epochs",
        file=sys.stderr,
    )
    res = gdopt.sweep(
        problem.loss_fn,
        problem.init_params,
        optimizer,
        problem.train,
        grid=grid,
        seeds=args.seeds,
        epochs=epochs,
        batch_size=batch,
        key=jax.random.PRNGKey(args.seed),
        eval_data=problem.test,
        accuracy_fn=problem.accuracy_fn if evaluated else None,
    )
    print(res.table())
    print(
        f"{len(res.configs)} runs in {res.wall_time:.2f} s (incl. {res.compile_time:.2f} s "
        f"compile); best: "
        + (
            ", ".join(f"{k}={v:.4g}" for k, v in res.best_config.items())
            if res.best_config
            else "-"
        )
    )
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "command": "gdopt sweep",
        "problem": problem.name,
        "optimizer": args.optimizer,
        "grid": grid,
        "seeds": args.seeds,
        "epochs": epochs,
        "batch_size": batch,
        "metric": res.metric,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
        "machine": _machine(),
        "wall_time_s": res.wall_time,
        "compile_time_s": res.compile_time,
        "best_index": res.best_index,
        "best_config": res.best_config,
        "runs": [
            {
                "config": res.configs[i],
                "seed": res.seeds[i],
                "final_train_loss": float(res.final_train_loss[i]),
                "test_loss": None if res.eval_loss is None else float(res.eval_loss[i]),
                "test_accuracy": (
                    None if res.eval_accuracy is None else float(res.eval_accuracy[i])
                ),
                "diverged": bool(res.diverged[i]),
                "epochs_run": int(res.epochs_run[i]),
                "train_loss": res.history.train_loss[i][res.history.epochs[i] > 0],
            }
            for i in range(len(res.configs))
        ],
    }
    json_path = out_dir / "sweep.json"
    _atomic_write(json_path, lambda f: json.dump(_jsonable(report), f, indent=2))
    written = [str(json_path)]
    if not args.no_plot:
        png = _save_figure(
            out_dir / "sweep.png",
            lambda: gdopt.plot.sweep_heatmap(
                res,
                "learning_rate",
                next((n for n in grid if n != "learning_rate"), "seed"),
                title=f"gdopt sweep: {problem.name}, {args.optimizer}",
            ),
        )
        if png is not None:
            written.append(str(png))
    print(f"wrote {', '.join(written)}")
    return 1 if res.best_index < 0 else 0


def _save_figure(path: Path, draw: Callable[[], Any]) -> Path | None:
    """Draw with the Agg backend and write ``path``; ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig = draw()
    try:
        _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120), binary=True)
    finally:
        plt.close(fig)
    return path


def _lr_find(args: argparse.Namespace) -> int:
    import gdopt

    problem, factory, batch = _tuning_setup(args)
    init_key, shuffle_key = _keys(args.seed)
    print(
        f"gdopt lr-find: {problem.name} with {args.optimizer}, rates {args.start_lr:g} to "
        f"{args.end_lr:g} over {args.num_steps} steps, batch {'full' if batch is None else batch}",
        file=sys.stderr,
    )
    res = gdopt.lr_find(
        problem.loss_fn,
        problem.init_params(init_key),
        factory(args.start_lr),
        problem.train,
        start_lr=args.start_lr,
        end_lr=args.end_lr,
        num_steps=args.num_steps,
        batch_size=batch,
        key=shuffle_key,
        suggestion=args.suggestion,
    )
    for rule in ("valley", "steep", "minimum"):
        mark = "  <- suggestion" if rule == res.rule else ""
        print(f"{rule:<8} {res.suggestions[rule]:.4g}{mark}")
    print(
        f"{len(res.learning_rates)} steps"
        + (" (stopped: the loss blew up)" if res.stopped_early else "")
    )
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "command": "gdopt lr-find",
        "problem": problem.name,
        "optimizer": args.optimizer,
        "batch_size": batch,
        "start_lr": args.start_lr,
        "end_lr": args.end_lr,
        "num_steps": args.num_steps,
        "suggestion": res.suggestion,
        "rule": res.rule,
        "suggestions": res.suggestions,
        "stopped_early": res.stopped_early,
        "learning_rates": res.learning_rates,
        "losses": res.losses,
        "smoothed_losses": res.smoothed_losses,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
    }
    json_path = out_dir / "lr_find.json"
    _atomic_write(json_path, lambda f: json.dump(_jsonable(report), f, indent=2))
    written = [str(json_path)]
    if not args.no_plot:
        png = _save_figure(
            out_dir / "lr_find.png",
            lambda: gdopt.plot.lr_find_curve(
                res, title=f"gdopt lr-find: {problem.name}, {args.optimizer}"
            ),
        )
        if png is not None:
            written.append(str(png))
    print(f"wrote {', '.join(written)}")
    return 0
