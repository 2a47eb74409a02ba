"""What every subcommand module shares: the one-line-error argument parser, bounded integer
flags, flags that may be given once, JSON that is JSON, warnings on stderr."""
from __future__ import annotations

import argparse
import math
import os
import re
import sys

from ..base.errors import ConfigError, TpsimError, clip
from ..base.schema import MAX_INT


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help with each flag's default appended (unless the help already says it or
    there is none to say); choices show in the flag's own line, {a,b,c}."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or \
                default == argparse.SUPPRESS or not action.option_strings:
            return text
        return f"{text} (default: {default})"


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit code 2 (no usage dump)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D401 - argparse API
        """One line, printed after ``tpsim: error:``: the subcommand's name before the message
        (``predict: argument --tp: ...``), the root parser's none (no ``tpsim: tpsim:``)."""
        command = self.prog.partition(" ")[2]
        raise TpsimError(clip(f"{command}: {message}" if command else message, 600))

    def parse_args(self, args=None, namespace=None):
        """argparse's, an unknown flag answered with the closest flags of the command run
        (its Megatron-LM aliases included): ``--tensor-model-parallel-sz``: did you mean
        --tensor-model-parallel-size?"""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = self._command_parser(parsed)
            hint = _closest(command, extras)
            command.error(f"unrecognized arguments: {' '.join(extras)}" +
                       (f" (did you mean {hint}?)" if hint else ""))
        return parsed

    def _command_parser(self, parsed) -> argparse.ArgumentParser:
        """The subcommand's parser that ``parsed`` ran (``tpsim plot search``: the deepest)."""
        parser = self
        while True:
            subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
            name = getattr(parsed, subs[0].dest, None) if subs else None
            if name not in (subs[0].choices if subs else {}):
                return parser
            parser = subs[0].choices[name]

    def _get_formatter(self):
        # argparse builds a formatter for every add_argument, each asking the terminal its
        # width: ask once per process
        return self.formatter_class(prog=self.prog, width=_terminal_width())


# a job's GPU count asked of a command that takes its parallel degrees instead
_GPU_COUNT = ("--gpus", "--num-gpus", "--ngpus", "--world-size", "--nproc-per-node")
# a training run's sequence length asked of a serving command, whose requests have two lengths
_SEQ = ("--seq", "--seq-len", "--seq-length", "--seqlen", "--max-seq-len", "--max-model-len",
        "--context-length")


def _closest(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """The flags of ``parser`` closest to the first unknown flag among ``extras``, joined by
    'or' ('' when none is close); a GPU count (``--gpus``) asked of a command that takes the
    parallel degrees instead names them."""
    import difflib
    flags = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    for given in extras:
        name = given.split("=", 1)[0]
        if name in _GPU_COUNT and "--tp" in flags:
            return ("--tp, --pp and --dp (the GPUs are their product; tpsim search takes --gpus)"
                    if "--dp" in flags else
                    "--tp and --pp (the GPUs are their product; tpsim serve-search takes --gpus)")
        if name in _SEQ and "--prompt" in flags:
            return "--prompt and --gen (a request's input and output tokens)"
        if given.startswith("--"):
            near = _cited(parser, name) or " or ".join(
                difflib.get_close_matches(name, flags, n=2, cutoff=0.6)) or \
                _cited(parser, name, prefixed=True)
            if near:
                return near
    return ""


def _cited(parser: argparse.ArgumentParser, name: str, prefixed: bool = False) -> str:
    """The flag whose help cites ``name`` as another tool's (--tp's help: vLLM's
    --tensor-parallel-size; --gen's: max_tokens; ``prefixed``, a longer name ending in it:
    --prompt's --random-input-len for --input-len), '' when none does."""
    bare, pre = name[2:], r"(?:\w+[-_])*" if prefixed else ""
    words = (re.escape(name),) if "-" not in bare else \
        ("--" + pre + re.escape(bare), pre + re.escape(bare.replace("-", "_")))
    cite = re.compile(r"(?<![\w-])(?:%s)(?![\w-])" % "|".join(words))
    for a in parser._actions:
        if a.option_strings and a.help and a.help != argparse.SUPPRESS and \
                cite.search(a.help) and name not in a.option_strings:
            return a.option_strings[0]
    return ""


_WIDTH: list[int] = []


def _terminal_width() -> int:
    """shutil.get_terminal_size().columns - 2, as argparse asks it, without importing shutil
    (and its bz2 and lzma) at every start: $COLUMNS, else stdout's terminal, else 80."""
    if not _WIDTH:
        try:
            columns = int(os.environ["COLUMNS"])
        except (KeyError, ValueError):
            columns = 0
        if columns <= 0:
            try:
                columns = os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
            except (AttributeError, ValueError, OSError):
                columns = 80
        _WIDTH.append(columns - 2)
    return _WIDTH[0]


_ASCII_INT = re.compile(r"\s*\+?[0-9]+\s*")
_ASCII_FLOAT = re.compile(r"\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*")


def positive_int(text: str) -> int:
    """An integer flag: 1 .. MAX_INT (a count of layers, tokens, GPUs), in ASCII digits: int()
    alone would take '1_000', '８' and '٣'."""
    if not _ASCII_INT.fullmatch(text) or len(text) > 4000:
        raise argparse.ArgumentTypeError(f"expected a positive integer (digits 0-9), got "
                                         f"{clip(repr(text), 60)}")
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {clip(repr(text), 60)}")
    if not 1 <= value <= MAX_INT:
        raise argparse.ArgumentTypeError(f"expected a positive integer at most {MAX_INT}, got "
                                         f"{clip(repr(text), 60)}")
    return value


_TOKENS = re.compile(r"\s*([0-9]+|[0-9]*\.[0-9]+)\s*([kK]?)\s*")
TOKENS_HELP = "; k means 1,024 tokens (8k = 8192)"


def token_count(text: str) -> int:
    """A count of tokens (--seq, --prompt, --gen): a positive integer in ASCII digits, or a
    number of thousands as sequence lengths are written, k (or K) meaning 1,024 tokens: 8k =
    8192, 128K = 131072, 1.5k = 1536 (a whole number of tokens)."""
    hit = _TOKENS.fullmatch(text) if len(text) <= 4000 else None
    if hit is None or (not hit[2] and "." in hit[1]):
        value = None
    elif "." not in hit[1]:
        value = int(hit[1]) * (1024 if hit[2] else 1)
    else:
        from fractions import Fraction          # exact: 1.5k is 1536, 1.3k no whole count
        exact = Fraction(hit[1]) * 1024
        value = int(exact) if exact.denominator == 1 else None
    if value is None or not 1 <= value <= MAX_INT:
        raise argparse.ArgumentTypeError(f"expected a positive number of tokens at most "
                                         f"{MAX_INT}, in digits or with k for 1,024 (8k = "
                                         f"8192), got {clip(repr(text), 60)}")
    return value


def natural_int(text: str) -> int:
    """An integer flag that may be 0 (--seed): 0 .. MAX_INT in ASCII digits, as
    :func:`positive_int` reads them."""
    if _ASCII_INT.fullmatch(text) and len(text) <= 4000 and 0 <= int(text) <= MAX_INT:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected an integer from 0 to {MAX_INT} (digits 0-9), "
                                     f"got {clip(repr(text), 60)}")


def probability(text: str) -> float:
    """A probability flag (--dropout): a decimal number in [0, 1) in ASCII digits; -0 is 0."""
    value = float(text) if _ASCII_FLOAT.fullmatch(text) else math.nan
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1), got "
                                         f"{clip(repr(text), 60)}")
    return value + 0.0          # -0.0 + 0.0 is 0.0: never printed as -0


def positive_rate(text: str) -> float:
    """A rate flag (--rate): a positive decimal number in ASCII digits, or inf (every request
    at once)."""
    value = math.inf if text.strip().lower() in ("inf", "infinity") else \
        float(text) if _ASCII_FLOAT.fullmatch(text) else math.nan
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number or inf, got "
                                         f"{clip(repr(text), 60)}")
    return value


def price(text: str) -> float:
    """A price flag (--usd-per-gpu-hour): a finite decimal number >= 0 in ASCII digits."""
    value = float(text) if _ASCII_FLOAT.fullmatch(text) else math.nan
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got "
                                         f"{clip(repr(text), 60)}")
    return value + 0.0          # -0 is 0: never printed as $-0.00


def lower(text: str) -> str:
    """Case-insensitive names: --protocol LL128 as NCCL_PROTO writes it."""
    return text.lower()


class StoreOnce(argparse.Action):
    """A flag that takes one value: given twice is an error, never last-wins."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = namespace.__dict__.setdefault("_given_once", {})
        if self.dest in given:
            parser.error(f"argument {option_string}: given twice ({clip(given[self.dest], 80)!r}"
                         f" and {clip(values, 80)!r}); it takes one value")
        given[self.dest] = values
        setattr(namespace, self.dest, values)


def _non_finite(obj, path: str = "") -> str | None:
    """The dotted path of the first NaN or infinity in a JSON-bound object, else None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return f"{path or 'value'} = {obj}"
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) \
        if isinstance(obj, (list, tuple)) else ()
    for k, v in items:
        hit = _non_finite(v, f"{path}[{k}]" if isinstance(k, int) else f"{path}.{k}".lstrip("."))
        if hit:
            return hit
    return None


def dump_json(obj, flag: str = "--json") -> str:
    """``obj`` as strict JSON (no NaN or Infinity, which JSON does not have): a non-finite
    number is a TpsimError naming where it is."""
    import json                 # only JSON output needs it: not imported at start-up
    try:
        return json.dumps(obj, indent=2, allow_nan=False)
    except ValueError:
        raise TpsimError(f"{flag}: the result holds a non-finite number "
                         f"({_non_finite(obj)}), which JSON cannot carry; check the inputs") from None


def add_csv(p) -> None:
    """``--csv``: the result as plain CSV (:mod:`tpsim.report.flat_csv`), beside ``--json``."""
    p.add_argument("--csv", action="store_true", help="plain CSV: a header, then one row per "
                   "result; the columns are the JSON's scalar keys (nested ones joined by dots)")


def output_format(args) -> str | None:
    """"json", "csv" or None (the report) as the flags ask; both is a ConfigError."""
    if args.json and args.csv:
        raise ConfigError("--csv", "", "--csv or --json, not both", "both")
    return "json" if args.json else "csv" if args.csv else None


TOPOLOGY_HELP = ("shipped name or path to a YAML file (default: dgx-h100, or "
                 "dgx-h100-ndr-cluster for a job of more than its 8 GPUs or given --nodes)")


def topology_for(given, gpus: int | None, nodes: int | None = None):
    """``--topology`` as given, else the default topology of a job of ``gpus`` GPUs on
    ``nodes`` (--nodes; :func:`tpsim.cluster.defaults.default_topology`: the same for every
    command)."""
    if given is not None:
        return given
    from ..cluster.defaults import default_topology
    return default_topology(gpus, nodes)


def note_seq(model, seq) -> None:
    """A Hugging Face config run without ``--seq``: one stderr line saying which sequence
    length it took, and from which of its keys (its whole context, often far longer than a
    training or serving run's)."""
    from ..spec.model import hf_seq_key, load_model
    key = None if seq is not None else hf_seq_key(model)
    if key:
        print(f"tpsim: note: {clip(str(model), 200)}: no --seq, so seq_len "
              f"{load_model(model).seq_len:,} from its {key}; pass --seq for the length you "
              "run at", file=sys.stderr)


def warn(text: str) -> None:
    """One warning line on stderr (the report on stdout keeps its own WARNING lines)."""
    print(f"tpsim: warning: {text}", file=sys.stderr)
