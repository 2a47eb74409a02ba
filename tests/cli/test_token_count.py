"""Token counts as people write them (tpsim.cli.common.token_count): digits, or k for 1,024
tokens (8k = 8192) on every flag that takes a count of tokens, one line and exit 2 otherwise."""
from __future__ import annotations

import argparse

import pytest
from hypothesis import given, strategies as st

from tpsim.base.schema import MAX_INT
from tpsim.cli import main
from tpsim.cli.common import token_count
from tpsim.cli.lists import token_list
from tpsim.spec.layout import Layout
from tpsim.spec.serve import ServeSettings
from tpsim.spec.serving import ServingLayout
from tpsim.spec.settings import declared

# (flag, a command that takes it, the attribute it sets)
TOKEN_FLAGS = [("--seq", ["predict", "--model", "gpt3-125m", "--tp", "1"]),
               ("--seq-length", ["predict", "--model", "gpt3-125m", "--tp", "1"]),
               ("--prompt", ["infer", "--model", "llama3-8b", "--tp", "1"]),
               ("--gen", ["infer", "--model", "llama3-8b", "--tp", "1"]),
               ("--max-num-batched-tokens", ["serve", "--model", "llama3-8b", "--tp", "1",
                                             "--requests", "4"])]


def test_the_token_flags_are_the_tokens_kind():
    kinds = {f.metadata["flag"]: f.metadata["kind"]
             for cls in (Layout, ServingLayout, ServeSettings) for f in declared(cls)}
    for flag in ("--seq", "--prompt", "--gen", "--max-num-batched-tokens"):
        assert kinds[flag] == "tokens"
    assert kinds["--global-batch"] == "count"     # sequences, not tokens


@given(st.integers(1, MAX_INT // 1024))
def test_k_is_1024_tokens(n):
    assert token_count(f"{n}k") == token_count(f"{n}K") == 1024 * n
    assert token_count(str(n)) == n
    assert token_list(f"{n},{n}k") == (n, 1024 * n)


@pytest.mark.parametrize("text, tokens", [("8k", 8192), ("128K", 131072), ("1.5k", 1536),
                                          (".5k", 512), (" 4096 ", 4096)])
def test_as_the_field_writes_lengths(text, tokens):
    assert token_count(text) == tokens


@given(st.text(max_size=12))
def test_any_text_is_a_count_or_one_refusal(text):
    """Never another exception; what it takes is a whole count from 1 to MAX_INT."""
    try:
        value = token_count(text)
    except argparse.ArgumentTypeError as e:
        assert "8k = 8192" in str(e) and "\n" not in str(e)
    else:
        assert type(value) is int and 1 <= value <= MAX_INT


@pytest.mark.parametrize("bad", ["0", "0k", "1.3k", "1.5", "k", "8kk", "8m", "-1k", "1e3",
                                 "٣k", f"{MAX_INT // 1024 + 1}k", "9" * 5000])
def test_bad_counts_are_refused_naming_the_flag(capsys, bad):
    for flag, argv in TOKEN_FLAGS:
        assert main([*argv, f"{flag}={bad}"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"argument {flag}:" in err and "8k = 8192" in err, err


def test_the_commands_run_with_k(capsys):
    assert main(["infer", "--model", "llama3-8b", "--tp", "1", "--prompt", "1k", "--gen",
                 "0.5k"]) == 0
    assert "prompt 1024, gen 512 tokens" in capsys.readouterr().out
    assert main(["predict", "--model", "gpt3-125m", "--tp", "1", "--seq", "1k,2k"]) == 0
    out = capsys.readouterr().out
    assert "1024" in out and "2048" in out
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "k means 1,024 tokens (8k = 8192)" in capsys.readouterr().out
