"""Tests of the gdopt command line (gdopt.cli, python -m gdopt)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from gdopt.cli import COMPARE_METHODS, main, optimizer_choices
from gdopt.problems import PROBLEM_NAMES

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
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
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
