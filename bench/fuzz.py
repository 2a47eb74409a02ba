"""Fuzz tpsim with bad input: the command line (every flag of every command, one bad value or a
few random flags at once), the Python API (every keyword of predict, infer, serve, search and
collective_time given a wrong type or value), input files (models, topologies, measured
points and reports: wrong types, missing keys, directories, empty, binary, non-UTF-8) and the
cluster and model objects built in code with bad values (bench/fuzz_built.py), then priced.

    python bench/fuzz.py [--cases 6000] [--seed 0]

Each case must end in one of two ways: a result (exit 0 with output; a value returned), or a
refusal (exit 2 with one line ``tpsim: error: ...`` on stderr; a TpsimError). A traceback (any
other exception), a negative zero printed (``$-0.00``: a -0 taken as given), a case that runs past ``HANG_S`` seconds (a hang), or a value that can never
be right taken without a word (NaN, an empty string, non-ASCII digits, a float for a count, a
string for a number: silent acceptance) is a failure, printed with the case that caused it.
tests/integration/test_fuzz.py runs a small sample of the same cases.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import random
import re
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))      # bench/fuzz_built.py
HANG_S = 30
NEGATIVE_ZERO = re.compile(r"(?<![\w.\-])-0(\.0*)?(?![\d.eE])")    # "-0", "-0.00" printed
# values that no flag takes (a name, a number, a file): each must be refused
NEVER = ["nan", "NaN", "-inf", "", " ", "\u0663", "\uff18", "abc", "0x10", "1e400x"]
# ...and that no count takes (beside NEVER)
NOT_COUNTS = ["inf", "1.5", "9" * 400, "1e300", "1_000", "-1", "+-1", "2**31"]
OTHER = ["0", "-0", "1", "2", "3", "4", "8", "16", "64", "1e-300", "0.5", "1e300", "2,4",
         "1,1", "4,,8", "auto", "full", "inf"]
FREE = {"--out", "--trace", "--format"}            # file names: any text may be one
SMALL = {"predict": ["predict", "--model", "gpt3-125m", "--tp", "2"],
         "search": ["search", "--model", "gpt3-125m", "--topology", "dgx-a100", "--gpus", "8",
                    "--global-batch", "8", "--top", "1"],
         "infer": ["infer", "--model", "llama3-8b", "--tp", "1"],
         "serve": ["serve", "--model", "llama3-8b", "--tp", "1", "--requests", "4"],
         "collective": ["collective", "--bytes", "1MiB"],
         "plot collective": ["plot", "collective", "--max-bytes", "64KiB"],
         "plot breakdown": ["plot", "breakdown", "--model", "gpt3-125m", "--tp", "2"],
         "plot pipeline": ["plot", "pipeline", "--model", "gpt3-125m", "--tp", "2", "--pp", "2",
                           "--global-batch", "4"],
         "plot infer": ["plot", "infer", "--model", "gpt3-125m"],
         "plot tp-vs-dp": ["plot", "tp-vs-dp", "--model", "gpt3-125m"]}


class Hang(Exception):
    pass


def _alarm(*_):
    raise Hang()


def run_cli(argv: list[str]) -> tuple[str, str]:
    """(outcome, detail): ok, refused, or a failure (traceback, hang, bad refusal)."""
    from tpsim.cli import main
    out, err = io.StringIO(), io.StringIO()
    signal.alarm(HANG_S)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except SystemExit as e:              # --help, --version
        code = 0 if e.code in (0, None) else e.code
    except Hang:
        return "hang", ""
    except BaseException as e:          # noqa: BLE001 - what the fuzz is looking for
        return "traceback", f"{type(e).__name__}: {e}"[:300]
    finally:
        signal.alarm(0)
    lines = err.getvalue().strip().splitlines()
    if code == 2:
        errors = [ln for ln in lines if ln.startswith("tpsim: error:")]
        ok = len(errors) == 1 and "Traceback" not in err.getvalue()
        return ("refused", "") if ok else ("bad refusal", err.getvalue()[-300:])
    named = any(a in FREE and v.startswith("-0") for a, v in zip(argv, argv[1:]))
    if code == 0:
        if NEGATIVE_ZERO.search(out.getvalue()) and not named:      # a file named -0 is fine
            return "negative zero", NEGATIVE_ZERO.search(out.getvalue()).group(0)
        return ("ok", "") if out.getvalue().strip() or not argv else ("no output", "")
    return "bad exit", f"{code}: {err.getvalue()[-300:]}"


def _options(argv: list[str]) -> list:
    """The value-taking options of the command ``argv`` starts with."""
    from tpsim.cli import build_parser
    parser = build_parser(argv)
    p = parser._command_parser(parser.parse_known_args(argv + ["--out", "x.png"] * (
        argv[0] == "plot"))[0])
    return [a for a in p._actions if a.option_strings and a.nargs != 0
            and a.option_strings[0] not in ("-h", "--help")]


def must_refuse(action, value: str) -> bool:
    """Whether no run can take ``value`` for ``action``'s flag (module docstring)."""
    from tpsim.cli.common import natural_int, positive_int
    flag = action.option_strings[0]
    if flag in FREE:
        return False
    if action.choices is not None:
        return value not in [str(c) for c in action.choices]
    metavar = action.metavar or ""
    if metavar.startswith("{"):            # a comma list of choices (tpsim.cli.lists)
        offered = metavar.strip("{}").split(",")
        return any(v.strip().lower() not in offered for v in value.split(","))
    counts = action.type in (positive_int, natural_int) or \
        getattr(action.type, "__name__", "") == "int_list"
    if value in NOT_COUNTS and counts:
        return True
    return value in NEVER


def cli_cases(rng: random.Random, n: int, tmp: Path):
    """(argv, must be refused) of n command-line cases."""
    names = list(SMALL)
    options = {k: _options(SMALL[k]) for k in names}
    for i in range(n):
        name = rng.choice(names)
        argv = list(SMALL[name])
        if name.startswith("plot"):
            argv += ["--out", str(tmp / f"p{i % 7}.png")]
        picks = rng.sample(options[name], k=min(len(options[name]), rng.choice((1, 1, 1, 2, 3))))
        refuse = False
        for action in picks:
            good = OTHER + [str(c) for c in action.choices or ()]
            value = rng.choice(good if rng.random() < 0.5 else NEVER + NOT_COUNTS)
            refuse |= must_refuse(action, value)
            argv += [rng.choice(action.option_strings), value]
        yield argv, refuse


BAD_VALUES = [None, "x", -1, 1e400, [], {"a": 1}, True, 10**30]     # a value of another type


def file_cases(rng: random.Random, tmp: Path):
    """(argv, must be refused) for broken input files under every flag that reads one."""
    import yaml
    from tpsim.cluster.topology import shipped_topologies
    from tpsim.spec.model import shipped_models
    docs = {"--model": yaml.safe_load(shipped_models()["gpt3-125m"].read_text()),
            "--topology": yaml.safe_load(shipped_topologies()["dgx-h100"].read_text())}
    broken = {"empty.yaml": b"", "list.yaml": b"- 1\n- 2\n", "scalar.yaml": b"42\n",
              "binary.yaml": bytes(range(256)), "latin1.yaml": "name: caf\xe9\n".encode("latin-1"),
              "tabs.yaml": b"a:\n\t- b\n", "deep.yaml": b"[" * 5000, "anchor.yaml":
              b"a: &a [*a]\n", "null.json": b"null", "csv.csv": b"size_bytes,time_s\n1,nan\n"}
    for name, data in broken.items():
        (tmp / name).write_bytes(data)
    (tmp / "dir.yaml").mkdir(exist_ok=True)
    paths = [str(tmp / n) for n in (*broken, "dir.yaml")] + ["/dev/null", "/nonexistent.yaml",
                                                               str(tmp / "x\x00.yaml")]
    for i, (flag, base) in enumerate((("--model", SMALL["predict"]), ("--topology", SMALL["predict"]),
                                      ("--model", SMALL["infer"]), ("--topology", SMALL["collective"]))):
        for path in paths:
            yield [*base, flag, path], True
        for j in range(40):                      # a key deleted, a value of another type
            doc = dict(docs[flag])
            key = rng.choice(list(doc))
            if j % 2:
                del doc[key]
            else:
                doc[key] = rng.choice(BAD_VALUES)
            path = tmp / f"m{flag[2:]}{i}-{j}.yaml"     # each case its own file (all made first)
            path.write_text(yaml.safe_dump(doc))
            yield [*base, flag, str(path)], False     # deleting an optional key is fine
    yield from device_cases(rng, tmp, docs["--topology"])
    for path in paths:
        yield [*SMALL["plot collective"], "--measured", path, "--out", str(tmp / "m.png")], True
        yield ["plot", "validation", "--report", path, "--out", str(tmp / "v.png")], True


def device_cases(rng: random.Random, tmp: Path, topology: dict):
    """(argv, must be refused) for a topology whose device has one key deleted or of another
    type (40), and the device knobs' own bad values: a clock window tpsim does not know, a
    CUDA-core pipe's rate not above 0, the pipes without their issue or fma rate; and the two
    required rates alone, priced (MMHA's decode)."""
    import yaml
    bad = [("clock_window", "bogus"), ("clock_window", 3), ("cuda_core_pipes", {"fma": -1, "issue": 1}),
           ("cuda_core_pipes", {"fma": 128}), ("cuda_core_pipes", {"issue": 128}),
           ("cuda_core_pipes", {"issue": 1, "fma": 1, "tensor": 1}), ("cuda_core_pipes", [])]
    cases = [(k, v, True) for k, v in bad] + [
        (rng.choice(list(topology["device"])), rng.choice(BAD_VALUES) if j % 2 else None, False)
        for j in range(40)]
    for j, (key, value, refuse) in enumerate(cases):
        device = dict(topology["device"])
        if value is None and not refuse:
            del device[key]
        else:
            device[key] = value
        path = tmp / f"device{j}.yaml"
        path.write_text(yaml.safe_dump({**topology, "device": device}))
        yield [*SMALL["predict"], "--topology", str(path)], refuse
    path = tmp / "two_pipes.yaml"           # the required rates alone: the others share fma
    path.write_text(yaml.safe_dump({**topology, "device": {
        **topology["device"], "cuda_core_pipes": {"issue": 128, "fma": 128}}}))
    yield [*SMALL["infer"], "--decode-attention", "trtllm-mmha", "--topology", str(path)], False


API_BAD = [None, True, False, -1, 0, 1.5, math.nan, math.inf, -math.inf, 10**30, "8", "", "nan",
           [], [8], {}, (8,), object(), b"8", 1j]


def api_cases(rng: random.Random, n: int):
    """(call, keyword, value, must be refused) of n API cases: keywords of the settings
    dataclasses and of search and collective_time, given wrong types and values."""
    import tpsim
    from tpsim.search.driver import search
    from tpsim.spec.settings import declared
    fields = {"predict": declared(tpsim.Layout), "infer": declared(tpsim.ServingLayout),
              "serve": declared(tpsim.ServingLayout) + declared(tpsim.ServeSettings)}
    calls = {"predict": lambda model="gpt3-125m", topology="dgx-h100", **kw:
             tpsim.predict(model, topology, **kw),
             "infer": lambda model="llama3-8b", topology="dgx-h100", **kw:
             tpsim.infer(model, topology, **{"tp": 1, **kw}),
             "serve": lambda model="llama3-8b", topology="dgx-h100", **kw:
             tpsim.serve(model, topology, **{"tp": 1, "requests": 4, **kw}),
             "search": lambda **kw: search(**{"model": "gpt3-125m", "topology": "dgx-a100",
                                              "gpus": 8, "global_batch": 8, "top": 1, **kw}),
             "collective_time": lambda **kw: tpsim.collective_time(**{
                 "op": "all-reduce", "nbytes": 2**20, "group": 8,
                 "topo": tpsim.load_topology("dgx-h100"), **kw})}
    other = {"search": ("model", "topology", "gpus", "global_batch", "seq_len", "dtype", "nodes",
                        "top", "jobs", "tp_across_nodes", "memory_headroom", "pins", "progress"),
             "collective_time": ("op", "nbytes", "group", "topo", "algorithm", "protocol")}
    for _ in range(n):
        call = rng.choice(list(calls))
        keys = [(f.name, f) for f in fields[call]] + [("model", None), ("topology", None)] \
            if call in fields else [(k, None) for k in other[call]]
        key, f = rng.choice(keys)
        value = rng.choice(API_BAD)
        yield call, calls[call], key, value, _api_refuses(f, value)


def _api_refuses(f, value) -> bool:
    """Whether a settings field can never take ``value`` (None: its default)."""
    if f is None or value is None:
        return False
    kind = f.metadata["kind"]
    if isinstance(value, (str, bytes, list, tuple, dict, complex)) or type(value) is object:
        return kind not in ("choice", "name") or value not in (f.metadata.get("choices") or ())
    if isinstance(value, float) and math.isnan(value):
        return True
    if kind == "count":
        return type(value) is not int or value < f.metadata["least"] or value > 2**31
    if kind == "flag":
        return type(value) is not bool
    if kind in ("choice", "name"):
        return value not in (f.metadata.get("choices") or ())
    return False


def run_api(fn, key, value) -> tuple[str, str]:
    """``fn(key=value)`` (``fn()`` where ``key`` is None): ok, refused or a failure."""
    from tpsim.base.errors import TpsimError
    signal.alarm(HANG_S)
    try:
        fn(**({} if key is None else {key: value}))
        return "ok", ""
    except TpsimError:
        return "refused", ""
    except Hang:
        return "hang", ""
    except BaseException as e:          # noqa: BLE001
        return "traceback", f"{type(e).__name__}: {e}"[:300]
    finally:
        signal.alarm(0)


def fuzz(cases: int, seed: int = 0, report=print) -> tuple[Counter, list]:
    """Run ``cases`` command-line and API cases, as many file cases (every one, 292, when
    ``cases`` is larger) and ``cases`` // 4 built ones; (outcomes, failures)."""
    from fuzz_built import built_cases
    rng, outcomes, failures = random.Random(seed), Counter(), []
    signal.signal(signal.SIGALRM, _alarm)
    with tempfile.TemporaryDirectory() as d, contextlib.chdir(d):
        tmp = Path(d)
        work = [("cli", argv, refuse, run_cli, (argv,))
                for argv, refuse in cli_cases(rng, cases * 2 // 3, tmp)]
        files = list(file_cases(rng, tmp))
        files = rng.sample(files, min(len(files), cases))       # all of them in a full run
        work += [("file", argv, refuse, run_cli, (argv,)) for argv, refuse in files]
        work += [("api", f"{call}({key}={value!r})", refuse, run_api, (fn, key, value))
                 for call, fn, key, value, refuse in api_cases(rng, cases - cases * 2 // 3)]
        work += [("built", case, refuse, run_api, (fn, None, None))
                 for case, fn, refuse in built_cases(rng, cases // 4)]
        for kind, case, refuse, runner, args in work:
            outcome, detail = runner(*args)
            if outcome == "ok" and refuse:
                outcome = "silent acceptance"
            outcomes[(kind, outcome)] += 1
            if outcome not in ("ok", "refused"):
                failures.append((kind, outcome, case, detail))
                report(f"{outcome}: {case!r} {detail}")
    return outcomes, failures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    outcomes, failures = fuzz(args.cases, args.seed)
    for (kind, outcome), n in sorted(outcomes.items()):
        print(f"{kind:5s} {outcome:18s} {n:6d}")
    print(f"{sum(outcomes.values())} cases, {len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
