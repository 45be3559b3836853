"""Numeric flags are range-checked by the parser: exit 2, one message in the flag's own terms,
before any work (no SOURCE, MODEL or PRED needs to exist for the check to fire)."""

from __future__ import annotations

import argparse

import pytest

from cough.cli import main as cli
from cough.flags import integer, number


@pytest.mark.parametrize("args, message", [
    # each of these used to hang, fail after Ray started, or print a raw Python error
    (["score", "S", "--model", "M", "--out", "P", "--actor-threads", "-3"],
     "argument --actor-threads: must be between 1 and 1024, not -3"),
    (["featurize", "S", "--out", "O", "--window-s", "1e9"],
     "argument --window-s: must be between 0.5 and 60 seconds, not 1e9"),
    (["featurize", "S", "--out", "O", "--window-s", "0.3"],
     "argument --window-s: must be between 0.5 and 60 seconds, not 0.3"),
    (["featurize", "S", "--out", "O", "--num-cpus", "-1"], "argument --num-cpus: must be at least 1, not -1"),
    (["score", "S", "--model", "M", "--out", "P", "--actor-cpus", "nan"],
     "argument --actor-cpus: must be a finite number, not 'nan'"),
    (["score", "S", "--model", "M", "--out", "P", "--actor-cpus", "-1"], "argument --actor-cpus: must be at least 0, not -1"),
    (["score", "S", "--model", "M", "--out", "P", "--actors", "0"], "argument --actors: must be at least 1, not 0"),
    (["score", "S", "--model", "M", "--out", "P", "--batch-size", "two"],
     "argument --batch-size: must be a whole number, not 'two'"),
    (["featurize", "S", "--out", "O", "--batch-size", "0"], "argument --batch-size: must be at least 1, not 0"),
    (["train", "S", "--out", "M", "--epochs", "0"], "argument --epochs: must be at least 1, not 0"),
    (["train", "S", "--out", "M", "--dropout", "1"], "argument --dropout: must be at least 0 and below 1, not 1"),
    (["train", "S", "--out", "M", "--learning-rate", "-0.1"],
     "argument --learning-rate: must be above 0 and at most 1, not -0.1"),
    (["train", "S", "--out", "M", "--val-fraction", "0"],
     "argument --val-fraction: must be above 0 and below 1, not 0"),
    (["train", "S", "--out", "M", "--test-fraction", "inf"], "argument --test-fraction: must be a finite number"),
    (["train", "S", "--out", "M", "--seed", "-1"], "argument --seed: must be at least 0, not -1"),
    (["train", "S", "--out", "M", "--max-failures", "-1"], "argument --max-failures: must be at least 0, not -1"),
    (["report", "P", "--out", "R", "--threshold", "5"], "argument --threshold: must be between 0 and 1, not 5"),
    (["report", "P", "--out", "R", "--n-boot", "0"], "argument --n-boot: must be at least 1, not 0"),
    (["nightly", "S", "--model", "M", "--pred", "P", "--max-error-rate", "1.5"],
     "argument --max-error-rate: must be between 0 and 1, not 1.5"),
    (["synth", "--out", "O", "--n", "0"], "argument --n: must be at least 1, not 0"),
])
def test_a_numeric_flag_out_of_range_is_exit_2_with_the_flags_range(args, message, capsys):
    code = cli(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert message in err[-1] and "min_tail_s" not in err[-1] and "Traceback" not in "\n".join(err)


def test_train_flags_that_bound_each_other_are_usage_errors(capsys):
    code = cli(["train", "S", "--out", "M", "--val-fraction", "0.5", "--test-fraction", "0.5"])
    assert code == 2 and "--val-fraction and --test-fraction" in capsys.readouterr().err


def test_flag_types_accept_what_is_in_range():
    assert integer(at_least=1)("3") == 3
    assert number(above=0, at_most=1)("1") == 1.0
    assert number(at_least=0.5, at_most=60)("0.5") == 0.5
    with pytest.raises(argparse.ArgumentTypeError, match="must be below 1, not 1"):
        number(below=1)("1")
