"""Bad input, as a new user or a fuzzer gives it: one line naming the file or flag, the key and
what was expected, exit code 2, in seconds; the Python API raises TpsimError (never TypeError,
OverflowError, ZeroDivisionError or RecursionError); nothing is accepted with a wrong number."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import tpsim
from tpsim.cli import main
from tpsim.base.errors import ConfigError, TpsimError, short_repr
from tpsim.cluster.topology import load_topology, shipped_topologies

from tests.conftest import REPO

H100 = shipped_topologies()["dgx-h100"].read_text()
GPT3 = (REPO / "tpsim" / "spec" / "models" / "gpt3.yaml").read_text()
LONG = "a" * 300                       # past the 255 bytes a file name may have


def fails(capsys, *argv, match: str = "") -> str:
    """Run the CLI; assert exit 2, nothing on stdout, one short line on stderr holding ``match``."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 2 and out == "", (code, out, err)
    assert err.startswith("tpsim: error: ") and err.count("\n") == 1 and len(err) < 1200, err
    assert match in err, err
    return err


def write(tmp_path, name: str, text: str | bytes):
    p = tmp_path / name
    p.write_bytes(text) if isinstance(text, bytes) else p.write_text(text)
    return str(p)


def _alias_bomb(key: str) -> str:
    """Nine levels of nine aliases: 9^9 = 387 million values once expanded."""
    levels = ['&a0 ["x","x","x","x","x","x","x","x","x"]']
    levels += [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    body = "\n".join(ln for ln in GPT3.splitlines() if not ln.startswith(f"{key}:"))
    return f"description: [{', '.join(levels)}]\n{key}: *a8\n" + \
        "\n".join(ln for ln in body.splitlines() if not ln.startswith("description:"))


# --------------------------------------------------------------------------- hangs

@pytest.mark.parametrize("key", ["name", "layers"])
def test_alias_bomb_is_refused_in_seconds(tmp_path, key):
    path = write(tmp_path, "bomb.yaml", _alias_bomb(key))
    r = subprocess.run([sys.executable, "-m", "tpsim", "predict", "--model", path],
                       capture_output=True, text=True, timeout=30, cwd=REPO)
    assert r.returncode == 2 and "at most 100000 values" in r.stderr and len(r.stderr) < 500


def test_error_messages_echo_a_bounded_value():
    bomb = ["x"] * 9
    for _ in range(8):
        bomb = [bomb] * 9                       # shared, as YAML aliases are
    loop: list = []
    loop.append(loop)
    for value in (bomb, loop, 10**5000, "z" * 10**6, {i: i for i in range(10**5)}):
        assert len(str(ConfigError("f.yaml", "k", "something", value))) < 400
    assert short_repr(10**5000) == "an integer of about 5001 digits"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "topo.yaml"
    os.mkfifo(fifo)
    r = subprocess.run([sys.executable, "-m", "tpsim", "predict", "--topology", str(fifo)],
                       capture_output=True, text=True, timeout=30, cwd=REPO)
    assert r.returncode == 2 and "regular file" in r.stderr and "FIFO" in r.stderr


def test_devices_and_oversized_files_are_refused(capsys, tmp_path, monkeypatch):
    if os.path.exists("/dev/zero"):
        fails(capsys, "predict", "--topology", "/dev/zero", match="a device")
    import tpsim.base.files
    monkeypatch.setattr(tpsim.base.files, "MAX_FILE_BYTES", 1000)
    big = write(tmp_path, "big.yaml", GPT3 + "#" * 2000 + "\n")
    fails(capsys, "predict", "--model", big, match="at most 1000 bytes")


# --------------------------------------------------------------------------- silently wrong

@pytest.mark.parametrize("line, key", [
    ("  memory_GiB: 1e300", "device.memory_GiB"),                 # inf bytes after * 2^30
    ("  memory_GiB: 1" + "0" * 400, "device.memory_GiB"),         # OverflowError in float()
    ("  gemm_half_efficiency_dim: 1e300", "device.gemm_half_efficiency_dim"),  # eff -> 0
    ("  memory_bandwidth_GBps: 1e-300", "device.memory_bandwidth_GBps"),
    ("  memory_GiB: .nan", "device.memory_GiB"),
])
def test_numbers_beyond_physical_are_refused(capsys, tmp_path, line, key):
    field = line.split(":")[0]
    text = "\n".join(line if ln.startswith(field + ":") else ln for ln in H100.splitlines())
    fails(capsys, "predict", "--topology", write(tmp_path, "t.yaml", text), match=key)


@pytest.mark.parametrize("text, key", [
    (GPT3 + "\nlayers: 8\n", "layers: expected each key once (line 4, again at line 16)"),
    ("name: a\n" + GPT3, "name: expected each key once"),
])
def test_duplicate_keys_are_refused(capsys, tmp_path, text, key):
    fails(capsys, "predict", "--model", write(tmp_path, "m.yaml", text), match=key)


def test_a_merge_key_may_still_override(tmp_path):
    """YAML's << brings keys in to be overridden: that is not a duplicate."""
    text = "base: &b {launch_us: 1.0}\n" + H100.replace(
        "  collective_protocols:\n    simple: {launch_us: 8.4}",
        "  collective_protocols:\n    simple: {<<: *b, launch_us: 8.4}")
    assert "<<" in text
    with pytest.raises(ConfigError, match="base"):      # the anchor's own key is unknown
        load_topology(write(tmp_path, "t.yaml", text))


@pytest.mark.parametrize("kwargs, flag", [
    ({"sequence_parallel": "no"}, "--sequence-parallel"),
    ({"sequence_parallel": None}, "--sequence-parallel"),
    ({"sequence_parallel": 2}, "--sequence-parallel"),
    ({"dropout": "0.1"}, "--dropout"),
    ({"dtype": ["bf16"]}, "--dtype"),
    ({"tp": 8.0}, "--tp"),
    ({"seq_len": 10**400}, "--seq"),
    ({"seq_len": 10**160}, "--seq"),
    ({"micro_batch": True}, "--micro-batch"),
    ({"recompute": ["none"]}, "--recompute"),
    ({"model": 3}, "--model"),
])
def test_predict_api_types(kwargs, flag):
    args = {"model": "gpt3", "topology": "dgx-h100", **kwargs}
    with pytest.raises(TpsimError) as e:
        tpsim.predict(**args)
    assert type(e.value) is ConfigError and e.value.source == flag


@pytest.mark.parametrize("args, flag", [
    (("all-reduce", 1e6, True), "--ranks"),
    (("all-reduce", 1e6, 1, "bogus"), "--algo"),                 # one rank returned early
    (("all-reduce", 1e6, 1, "auto", "bogus"), "--protocol"),
    (("all-reduce", 1e6, 8, "auto", ["ll"]), "--protocol"),       # unhashable
    (("all-reduce", 1e6, 8, "auto", {}), "--protocol"),
    (("all-reduce", "1e6", 8), "--bytes"),
    (("all-reduce", float("inf"), 8), "--bytes"),
    (("all-reduce", 10**400, 8), "--bytes"),
    (("all-reduce", 1e6, 8.0), "--ranks"),
])
def test_collective_api_checks_every_argument(args, flag):
    topo = load_topology("dgx-h100")
    with pytest.raises(ConfigError) as e:
        tpsim.collective_time(*args[:3], topo, *args[3:])
    assert e.value.source == flag
    with pytest.raises(ConfigError, match="--topology"):
        tpsim.collective_time("all-reduce", 1e6, 8, 3)
    assert tpsim.collective_time("all-reduce", 1e6, 8, "dgx-h100").time_s > 0   # a name loads


def test_protocol_names_ignore_case(capsys):
    topo = load_topology("dgx-h100")
    assert tpsim.collective_time("all-reduce", 2**26, 8, topo, "ring", "LL128").protocol == "ll128"
    assert main(["collective", "--algo", "RING", "--protocol", "LL128"]) == 0
    assert "ring/ll128" in capsys.readouterr().out


@pytest.mark.parametrize("argv, match", [
    (["collective", "--ranks", "1", "--algo", "bogus", "--protocol", "bogus"], "--algo"),
    (["collective", "--ranks", "1", "--protocol", "bogus"], "--protocol"),
    (["collective", "--bytes", "1e400"], "--bytes"),
    (["collective", "--bytes", "1" + "0" * 400], "--bytes"),
    (["collective", "--sweep", "--bytes", "1MiB"], "no --bytes with --sweep"),
    (["predict", "--trace", ""], "--trace"),
    (["predict", "--seq", "1e160"], "--seq"),
    (["predict", "--seq", "1" + "0" * 160], "--seq"),
    (["predict", "--tp", "1" + "0" * 400], "--tp"),
    (["predict", "--hidden", "1" + "0" * 309], "--hidden"),
    (["predict", "--dropout", "nan"], "--dropout"),
    (["predict", "--topology", "dgx-h100", "--topology", "dgx-a100"], "given twice"),
    (["predict", "--model", "gtp3"], "did you mean gpt3?"),
    (["predict", "--topology", "dgx-h10"], "did you mean dgx-h100"),
    (["predict", "--model", LONG], "--model"),
    (["predict", "--model", LONG + ".yaml"], "File name too long"),
    (["predict", "--topology", LONG + ".yaml"], "File name too long"),
    (["predict", "--model", "gpt3-350m", "--tp", "2", "--trace", LONG + ".json"], "--trace"),
    (["plot", "validation", "--report", LONG + ".json", "--out", "v.png"], "File name too long"),
    (["plot", "collective", "--measured", LONG + ".csv", "--out", "c.png"], "File name too long"),
    (["predict", "--dtype", "int8"], "invalid choice"),
    (["infer", "--prompt", "1" + "0" * 400], "--prompt"),
    (["infer", "--topology", "dgx-h100", "--topology", "dgx-a100"], "given twice"),
    (["predict", "--recompute", "some"], "invalid choice"),
])
def test_cli_bad_input(capsys, tmp_path, monkeypatch, argv, match):
    monkeypatch.chdir(tmp_path)
    fails(capsys, *argv, match=match)
    assert list(tmp_path.iterdir()) == []          # nothing written (--trace '' wrote nothing)


def test_json_is_strict(capsys):
    """--json never prints NaN or Infinity (not JSON); a non-finite number is named."""
    from tpsim.cli.common import dump_json
    with pytest.raises(TpsimError, match=r"layer.total_s = inf"):
        dump_json({"layer": {"total_s": float("inf")}})
    assert main(["predict", "--model", "llama3-70b", "--tp", "2", "--json"]) == 0
    out, err = capsys.readouterr()

    def no_constants(name):
        raise AssertionError(f"{name} in --json output")
    json.loads(out, parse_constant=no_constants)
    assert err.startswith("tpsim: warning: does not fit")       # the warning, on stderr too


# --------------------------------------------------------------------------- tracebacks

def test_non_utf8_files(capsys, tmp_path):
    bad = b"name: \xff\xfe\n"
    fails(capsys, "predict", "--model", write(tmp_path, "m.yaml", bad), match="UTF-8")
    fails(capsys, "plot", "validation", "--report", write(tmp_path, "r.json", bad),
          "--out", str(tmp_path / "v.png"), match="UTF-8")
    fails(capsys, "plot", "collective", "--measured", write(tmp_path, "m.csv", bad),
          "--max-bytes", "1MiB", "--out", str(tmp_path / "c.png"), match="UTF-8")


@pytest.mark.parametrize("command, module", [("models", "tpsim.spec.model"),
                                             ("topologies", "tpsim.cluster.topology")])
def test_a_bad_shipped_file_is_named(capsys, tmp_path, monkeypatch, command, module):
    import importlib
    mod = importlib.import_module(module)
    good = sorted(mod.shipped_dir().glob("*.yaml"))[0]
    (tmp_path / good.name).write_text(good.read_text())
    (tmp_path / "zz-broken.yaml").write_bytes(b"name: \xff\n")
    monkeypatch.setattr(mod, "shipped_dir", lambda: tmp_path)
    fails(capsys, command, match="zz-broken.yaml")


def test_huge_integers_in_yaml(capsys, tmp_path):
    text = GPT3.replace("layers: 96", "layers: 1" + "0" * 400)
    fails(capsys, "predict", "--model", write(tmp_path, "m.yaml", text),
          match="layers: expected an integer of at most 2147483647")
    text = GPT3.replace("layers: 96", "layers: 1" + "0" * 5000)        # past int()'s limit
    fails(capsys, "predict", "--model", write(tmp_path, "m.yaml", text), match="m.yaml")


def test_deep_json_and_yaml(capsys, tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    fails(capsys, "plot", "validation", "--report", write(tmp_path, "r.json", deep),
          "--out", str(tmp_path / "v.png"), match="nested")
    fails(capsys, "plot", "collective", "--measured", write(tmp_path, "m.json", deep),
          "--max-bytes", "1MiB", "--out", str(tmp_path / "c.png"), match="nested")
    fails(capsys, "predict", "--model", write(tmp_path, "m.yaml", "a: " + deep),
          match="valid YAML")
    fails(capsys, "predict", "--model", write(tmp_path, "d.yaml", GPT3 + "\nx: 2020-13-01\n"),
          match="d.yaml")


def test_trace_and_out_paths_from_the_api(tmp_path):
    from tpsim.figures.data import output_paths
    from tpsim.report.trace import write_trace
    for bad in (None, "", "  "):
        with pytest.raises(ConfigError, match="--trace"):
            write_trace({"traceEvents": []}, bad)
        with pytest.raises(ConfigError, match="--out"):
            output_paths(bad, None)
    with pytest.raises(ConfigError, match="finite times"):
        write_trace({"traceEvents": [{"ts": float("nan")}]}, tmp_path / "t.json")
    assert not (tmp_path / "t.json").exists()
    with pytest.raises(ConfigError, match="--trace: expected a file in an existing directory"):
        write_trace({"traceEvents": []}, tmp_path / "new" / "t.json")
    assert not (tmp_path / "new").exists()
    assert write_trace({"traceEvents": []}, tmp_path / "t.json").is_file()
