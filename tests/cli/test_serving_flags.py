"""The serving commands' flags for a newcomer: every flag of `tpsim serve`, `tpsim serve-search`
and `tpsim infer` says its default (or that it is a switch or required), and a bad value of
any of them is one line naming the flag, exit 2, never a traceback."""
from __future__ import annotations

import argparse

import pytest

from tpsim.cli import build_parser, main

BASE = {"serve": ["--model", "llama3-8b", "--tp", "1", "--requests", "8"],
        "serve-search": ["--model", "llama3-8b", "--gpus", "1", "--ttft-p99", "1",
                         "--tpot-p99", "0.1", "--requests", "8"],
        "infer": ["--model", "llama3-8b", "--tp", "1"]}
# values no flag of these commands takes: not a number, not a name, not a positive size
BAD = ("", "nan", "-1", "1e999", "x,", "\u0661\u0662")


def _options(command: str) -> list[argparse.Action]:
    parser = build_parser([command])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [a for a in sub.choices[command]._actions
            if a.option_strings and a.dest not in ("help",)]


def _valued(command: str) -> list[str]:
    return [a.option_strings[0] for a in _options(command) if a.nargs != 0]


@pytest.mark.parametrize("command", sorted(BASE))
def test_every_flag_says_its_default(command):
    from tpsim.cli.common import HelpFormatter
    fmt = HelpFormatter(command)
    for a in _options(command):
        text = fmt._get_help_string(a)
        assert a.nargs == 0 or a.required or "default" in text, (a.option_strings, text)
        assert "(None,)" not in text and "(default: None)" not in text, text


@pytest.mark.parametrize("command, flag", [(c, f) for c in sorted(BASE) for f in _valued(c)])
def test_a_bad_value_is_one_line_naming_the_flag(command, flag, capsys):
    args = list(BASE[command])
    if flag in args:                              # the flag's own value replaced
        del args[args.index(flag):args.index(flag) + 2]
    for value in BAD:
        if flag in ("--model", "--topology", "--draft-model") and value == "" or \
                command == "serve" and flag == "--rate" and value == "1e999":
            continue                 # an empty name: the default; serve's rate inf: offline
        code = main([command, *args, flag, value])
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, (flag, value, err)
        assert flag in lines[0] or flag.replace("-", "_")[2:] in lines[0], (flag, value, err)
