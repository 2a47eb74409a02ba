"""What every subcommand shares (tpsim.cli.common): number flags, suggestions, the default
topology."""
import math

import pytest

from tpsim.cli import main
from tpsim.cli.common import price, probability, topology_for
from tpsim.cluster.defaults import CLUSTER, NODE


def test_minus_zero_is_zero():
    """-0 is taken as 0 and never printed as $-0.00 (math.copysign reads the sign)."""
    for parse in (price, probability):
        assert parse("-0") == 0 and math.copysign(1, parse("-0")) == 1


def test_minus_zero_price_prints_no_sign(capsys):
    assert main(["predict", "--model", "gpt3-125m", "--tp", "1", "--usd-per-gpu-hour", "-0"]) == 0
    out = capsys.readouterr().out
    assert "cost $0.0000 per step" in out and "$-0" not in out


def test_topology_for_keeps_what_is_given():
    assert topology_for("dgx-a100", 512) == "dgx-a100"
    assert topology_for(None, 8) == NODE and topology_for(None, 16) == CLUSTER



def test_a_count_that_may_be_zero_takes_ascii_digits_only():
    """--seed 0 .. MAX_INT: '٣' (Arabic-Indic three), '1_0' and '' are refused, as for every
    count (int() alone takes the first two)."""
    import argparse

    import pytest

    from tpsim.cli.common import natural_int
    assert natural_int("0") == 0 and natural_int("+3") == 3 and natural_int(" 7 ") == 7
    for bad in ("\u0663", "1_0", "", "-1", "2147483648", "1.0", "nan"):
        with pytest.raises(argparse.ArgumentTypeError):
            natural_int(bad)


def test_an_integer_choice_takes_ascii_digits_only(capsys):
    """--zero {0,1,2,3}: '\u0663' (Arabic-Indic three) was read as 3 by int(); refused in one
    line naming the flag, as every count's digits are, and 3 still taken."""
    assert main(["predict", "--model", "gpt3-125m", "--tp", "2", "--zero", "\u0663"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--zero" in err
    assert main(["predict", "--model", "gpt3-125m", "--tp", "2", "--dp", "2", "--zero", "3"]) == 0


def test_an_empty_size_is_refused_not_the_default(capsys):
    """--min-bytes '' was read as the default 1KiB."""
    assert main(["collective", "--sweep", "--min-bytes", "", "--max-bytes", "4KiB"]) == 2
    assert "--min-bytes" in capsys.readouterr().err


def test_usage_errors_name_the_subcommand_once(capsys):
    """argparse's errors read ``tpsim: error: predict: ...``: the subcommand named once, the
    root parser's errors with no second ``tpsim:``; an unknown flag is the subcommand's."""
    cases = [(["predict", "--tp", "x"], "tpsim: error: predict: argument --tp: "),
             (["predict", "--modle", "gpt3"], "tpsim: error: predict: unrecognized arguments: "),
             (["plot", "search", "--gpus", "8"], "tpsim: error: plot search: "),
             (["bogus"], "tpsim: error: argument command: invalid choice: 'bogus'")]
    for argv, start in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(start) and err.count("tpsim") == 1, err


@pytest.mark.parametrize("argv, wrong, value, meant", [
    (["infer", "--model", "llama3-8b", "--tp", "1"], "--input-len", "1024", "--prompt"),
    (["infer", "--model", "llama3-8b", "--tp", "1"], "--output-len", "64", "--gen"),
    (["infer", "--model", "llama3-8b"], "--tensor-parallel-size", "1", "--tp"),
    (["serve", "--model", "llama3-8b", "--tp", "1", "--requests", "8"], "--max-tokens", "16",
     "--gen"),
    (["serve", "--model", "llama3-8b", "--tp", "1", "--requests", "8"], "--request-rate", "4",
     "--rate"),
    (["serve", "--model", "llama3-8b", "--tp", "1"], "--num-prompts", "8", "--requests"),
    (["predict", "--model", "gpt3-125m"], "--tensor-parallel-size", "1",
     "--tensor-model-parallel-size"),
])
def test_another_tools_flag_names_ours_and_ours_runs(capsys, argv, wrong, value, meant):
    """A flag as vLLM or its benchmarks name it (cited in our flag's help) is answered with
    ours, in one line, exit 2; the command with ours runs."""
    assert main([*argv, wrong, value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"(did you mean {meant}" in err, err
    assert main([*argv, meant, value]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("command", ["infer", "serve"])
def test_a_training_length_asked_of_serving_names_both_lengths(capsys, command):
    assert main([command, "--model", "llama3-8b", "--seq", "8k"]) == 2
    assert "did you mean --prompt and --gen" in capsys.readouterr().err
