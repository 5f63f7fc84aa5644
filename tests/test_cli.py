"""Tests of the gdopt command line (gdopt.cli, python -m gdopt)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from gdopt.cli import COMPARE_METHODS, main, optimizer_choices
from gdopt.problems import PROBLEM_NAMES
from tests.helpers import subprocess_env

HAVE_MPL = importlib.util.find_spec("matplotlib") is not None


def test_compare_writes_json_and_plot(tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["compare", "--epochs", "2", "--out", str(out)]) == 0
    report = json.loads((out / "compare.json").read_text())
    assert [m["method"] for m in report["methods"]] == [m.name for m in COMPARE_METHODS]
    assert report["problem"] == "digits-mlp" and report["epochs"] == 2
    assert report["versions"]["gdopt"] and report["versions"]["jax"]
    assert report["machine"]["cpu_count"] >= 1
    by_name = {m["method"]: m for m in report["methods"]}
    assert by_name["batch GD"]["batch_size"] is None and by_name["batch GD"]["steps_run"] == 2
    assert by_name["SGD"]["batch_size"] == 1 and by_name["SGD"]["steps_run"] == 2 * 1438
    assert by_name["momentum"]["hyperparams"]["momentum"] == 0.9
    for m in report["methods"]:
        assert m["epochs_run"] == 2 and len(m["history"]["train_loss"]) == 2
        assert 0.0 <= m["test_accuracy"] <= 1.0
        assert m["wall_time_s"] >= m["compile_time_s"] > 0
    assert by_name["Adam"]["test_accuracy"] > 0.8
    assert (out / "compare.png").exists() == HAVE_MPL
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
    stdout = capsys.readouterr().out
    table = stdout.splitlines()
    assert table[0].split()[:3] == ["method", "optimizer", "batch"]
    assert any(line.startswith("mini-batch SGD") for line in table)
    # the table is aligned: every row as long as the header rule
    rule = table[1]
    assert all(len(row) <= len(rule) for row in table[2:8])


def test_train_runs_and_reports(capsys):
    rc = main(
        [
            "train",
            "--problem",
            "classification",
            "--optimizer",
            "adam",
            "--learning-rate",
            "0.05",
            "--epochs",
            "3",
            "--batch-size",
            "32",
            "--seed",
            "1",
        ]
    )
    assert rc == 0
    captured = capsys.readouterr()
    assert "test accuracy:" in captured.out
    assert "stop reason:      completed 3 epochs" in captured.out
    assert "3/3" in captured.err  # the progress bar


def test_unknown_optimizer_lists_choices(capsys):
    assert main(["train", "--optimizer", "adamm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gdopt: error: unknown optimizer 'adamm'")
    assert "adam" in err[0] and "rmsprop" in err[0] and "sgd" in err[0]


@pytest.mark.parametrize("command", ["train", "compare"])
def test_unknown_problem_lists_choices(command, capsys, tmp_path):
    assert main([command, "--problem", "mnist"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown problem 'mnist'" in err[0]
    assert all(name in err[0] for name in PROBLEM_NAMES)


@pytest.mark.parametrize(
    "args, match",
    [
        (["--learning-rate", "-0.1"], "learning_rate must be a finite number in (0, inf)"),
        (["--learning-rate", "0"], "learning_rate must be a finite number in (0, inf)"),
        (["--epochs", "0"], "--epochs must be >= 1, got 0"),
        (["--batch-size", "0"], "batch_size must be an integer in [1, 410]"),
        (["--batch-size", "5000"], "got 5000"),
        (["--tol", "-1"], "--tol must be a finite number > 0, got -1.0"),
        (["--patience", "0"], "--patience must be >= 1, got 0"),
        (["--epochs", "x"], "argument --epochs: invalid int value: 'x'"),
    ],
)
def test_bad_numbers_exit_2_with_one_line(args, match, capsys):
    assert main(["train", "--problem", "classification", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(("gdopt: error:", "gdopt train: error:"))
    assert match in err[0]


def test_compare_rejects_bad_epochs(tmp_path, capsys):
    assert main(["compare", "--epochs", "0", "--out", str(tmp_path)]) == 2
    assert "--epochs must be >= 1" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_optimizer_choices_by_introspection():
    choices = optimizer_choices()
    assert {"sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad"} <= set(choices)
    assert "named_optimizer" not in choices
    assert list(choices) == sorted(choices)


def test_bench_outside_a_checkout(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["bench"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "source checkout" in err[0]


def test_bench_runs_named_module(tmp_path, monkeypatch, capsys):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "__init__.py").write_text("")
    (bench / "hello.py").write_text("print('hello from bench')\n")
    (bench / "fails.py").write_text("raise SystemExit(3)\n")
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "nope"]) == 2
    assert "choose from: fails, hello" in capsys.readouterr().err
    assert main(["bench", "hello"]) == 0
    assert main(["bench", "fails"]) == 1


def test_python_m_gdopt_help():
    env = subprocess_env()  # the suite's warning filters: a warning fails the test
    proc = subprocess.run(
        [sys.executable, "-m", "gdopt", "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for command in ("compare", "train", "bench"):
        assert command in proc.stdout


def test_no_command_and_help_exit_codes(capsys):
    assert main([]) == 2
    assert main(["train", "--help"]) == 0
    assert "--learning-rate" in capsys.readouterr().out


# ---------------------------------------------------------------- gdopt sweep, gdopt lr-find


def test_sweep_prints_the_sorted_table_and_writes_json_and_heatmap(tmp_path, capsys):
    out = tmp_path / "sw"
    argv = [
        "sweep",
        "--problem",
        "digits-softmax",
        "--learning-rate",
        "1e-3:1e-1:3",
        "--seeds",
        "2",
        "--epochs",
        "2",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    report = json.loads((out / "sweep.json").read_text())
    assert report["grid"]["learning_rate"] == pytest.approx([1e-3, 1e-2, 1e-1])
    assert len(report["runs"]) == 6 and [r["seed"] for r in report["runs"]] == [0, 1] * 3
    assert all(len(r["train_loss"]) == 2 and r["epochs_run"] == 2 for r in report["runs"])
    losses = [r["test_loss"] for r in report["runs"]]
    assert report["best_config"] == report["runs"][int(np.argmin(losses))]["config"]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["rank", "learning_rate", "seed"]
    shown = [float(line.split()[4]) for line in lines[1:7]]  # the eval loss column, sorted
    assert shown == sorted(shown) and len(shown) == 6
    assert (out / "sweep.png").exists() == HAVE_MPL


def test_sweep_crosses_a_second_hyperparameter(tmp_path, capsys):
    argv = [
        "sweep",
        "--problem",
        "linear-regression",
        "--optimizer",
        "sgd",
        "--learning-rate",
        "0.01,0.1",
        "--hyperparam",
        "momentum=0.0,0.9",
        "--epochs",
        "2",
        "--out",
        str(tmp_path),
        "--no-plot",
    ]
    # sgd's momentum is a hyperparameter only when the optimizer is built with one
    assert main(argv) == 2
    assert "momentum" in capsys.readouterr().err
    argv[argv.index("sgd")] = "adam"
    argv[argv.index("momentum=0.0,0.9")] = "b1=0.5,0.9"
    assert main(argv) == 0
    report = json.loads((tmp_path / "sweep.json").read_text())
    assert [r["config"] for r in report["runs"]] == [
        {"learning_rate": 0.01, "b1": 0.5},
        {"learning_rate": 0.01, "b1": 0.9},
        {"learning_rate": 0.1, "b1": 0.5},
        {"learning_rate": 0.1, "b1": 0.9},
    ]
    assert not (tmp_path / "sweep.png").exists()


def test_lr_find_prints_suggestions_and_writes_the_curve(tmp_path, capsys):
    argv = ["lr-find", "--problem", "digits-softmax", "--num-steps", "40", "--out", str(tmp_path)]
    assert main(argv) == 0
    report = json.loads((tmp_path / "lr_find.json").read_text())
    assert set(report["suggestions"]) == {"valley", "steep", "minimum"}
    assert report["suggestion"] == report["suggestions"]["valley"]
    assert 0 < len(report["learning_rates"]) <= 40
    assert report["learning_rates"][0] == pytest.approx(1e-7)
    stdout = capsys.readouterr().out
    assert "valley" in stdout and "<- suggestion" in stdout
    assert (tmp_path / "lr_find.png").exists() == HAVE_MPL


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sweep", "--learning-rate", "1:0.1:4"], "--learning-rate must be LO:HI:N"),
        (["sweep", "--learning-rate", "a,b"], "--learning-rate must be LO:HI:N"),
        (["sweep", "--seeds", "0"], "--seeds must be >= 1"),
        (["sweep", "--hyperparam", "b1"], "--hyperparam must be NAME=SPEC"),
        (["sweep", "--hyperparam", "lr=0.1"], r"unknown hyperparameter\(s\) \['lr'\]"),
        (["sweep", "--learning-rate=-1,0.1"], "learning_rate must be a finite number"),
        (["sweep", "--optimizer", "nope"], "unknown optimizer 'nope'"),
        (["lr-find", "--start-lr", "1", "--end-lr", "0.1"], "start_lr must be < end_lr"),
        (["lr-find", "--num-steps", "1"], "num_steps must be an integer >= 2"),
        (["lr-find", "--suggestion", "best"], "suggestion must be one of"),
    ],
)
def test_tuning_commands_bad_input(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("gdopt: error:") and len(lines) <= 2  # no traceback
    assert re.search(message, lines[-1])


@pytest.mark.parametrize("kind", ["file", "read-only"])
def test_compare_checks_out_before_any_training(kind, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("not a directory")
        match = "exists and is not a directory"
    else:
        out.mkdir()
        monkeypatch.setattr(os, "access", lambda path, mode: False)
        match = "is not writable"
    import gdopt

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking --out")

    monkeypatch.setattr(gdopt, "fit", no_training)
    assert main(["compare", "--epochs", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("gdopt: error: --out") and match in err[-1]


def test_ctrl_c_during_train_exits_130_with_one_line():
    import time

    env = subprocess_env()  # the suite's warning filters: a warning fails the test
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gdopt",
            "train",
            "--problem",
            "classification",
            "--epochs",
            "2000000",
            "--batch-size",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        seen = ""
        while "fit:" not in seen:  # the progress bar: compiled, in the training loop
            ch = proc.stderr.read(1)
            assert ch, seen
            seen += ch
        time.sleep(1.0)
        proc.send_signal(2)  # SIGINT, as Ctrl-C sends it
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:  # the test failed before it ended: no ResourceWarning
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("gdopt: interrupted (Ctrl-C) after epoch ") and "printed above" in last
    assert "stop reason:      interrupted (Ctrl-C) after epoch" in out
