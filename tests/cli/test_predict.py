"""`tpsim predict` and `tpsim models`: output for a person, JSON for scripts, one line and exit 2
for bad input, and no torch or matplotlib on the way."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tpsim.cli import main
from tpsim.training.predict import predict

from tests.conftest import REPO
from tests.cli.test_collective_cli import help_text


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("topology, tp", [("dgx-a100", 8), ("dgx-h100", 8),
                                          ("dgx-h100-ndr-cluster", 16)])
def test_text_output_has_every_section(capsys, topology, tp):
    code, out, err = run(capsys, "predict", "--model", "gpt3", "--tp", str(tp),
                         "--topology", topology, "--ops")
    assert code == 0
    # each WARNING line of the report also goes to stderr, and nothing else does
    warnings = [ln[len("WARNING: "):] for ln in out.splitlines() if ln.startswith("WARNING: ")]
    assert err.splitlines() == [f"tpsim: warning: {w}" for w in warnings] and warnings
    for text in ("fwd.qkv", "bwd.mlp_in.wgrad", "forward", "backward", "exposed comm",
                 "comm share", "collectives per layer", "heads per rank", "96 layers x",
                 "MFU", "TFLOP/s per GPU", "optimizer", "activations", "DOES NOT FIT"):
        assert text in out, text


def test_json_matches_the_api(capsys):
    code, out, _ = run(capsys, "predict", "--model", "gpt3", "--tp", "8", "--json")
    assert code == 0
    d = json.loads(out)
    p = predict("gpt3", "dgx-h100", tp=8)
    assert d["layer"]["total_s"] == pytest.approx(p.layer.total_s)
    assert d["model"]["step_s"] == pytest.approx(p.model.step_s)
    assert d["memory"]["fits"] is False
    assert [(c["op"], c["phase"], c["count"], c["bytes"]) for c in d["collectives"]] == \
        [("all-reduce", "forward", 2, 50331648), ("all-reduce", "backward", 2, 50331648)]


def test_flags_reach_the_model(capsys):
    """The chapter's exercise 2: TP 4, 12 heads, hidden 4096 (head_dim 256 to make it whole)."""
    code, out, _ = run(capsys, "predict", "--model", "gpt3", "--tp", "4", "--hidden", "4096",
                       "--heads", "12", "--head-dim", "256", "--layers", "2", "--seq", "512",
                       "--micro-batch", "2", "--dtype", "fp16", "--sequence-parallel",
                       "--dropout", "0", "--attention", "unfused", "--json")
    assert code == 0
    d = json.loads(out)
    i = d["inputs"]
    assert (i["tp"], i["seq_len"], i["micro_batch"], i["dtype"], i["heads_per_rank"]) == \
        (4, 512, 2, "fp16", 3)
    assert i["sequence_parallel"] and i["attention"] == "unfused" and i["dropout"] == 0
    assert d["model"]["layers"] == 2
    assert not [o for o in d["ops"] if "dropout" in o["name"] and "bias_dropout_add" not in o["name"]]


def test_models_lists_presets(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0 and "gpt3 " in out and "llama3-405b" in out and "174.58B" in out
    lines = out.splitlines()
    assert len({line.index(" ", line.index("B ")) for line in lines[1:]}) == 1   # aligned
    mixtral = next(x for x in lines if x.startswith("mixtral-8x7b ")).split()
    assert mixtral[1:3] == ["46.70B", "12.88B"]       # all eight experts, and the two a token meets


@pytest.mark.parametrize("argv, match", [
    (["--model", "llama2-13b", "--tp", "16", "--topology", "dgx-h100-ndr-cluster"], "heads"),
    (["--model", "gpt3", "--tp", "16", "--topology", "dgx-h100"], "at most the 8 GPUs"),
    (["--model", "gpt5"], "gpt3"),
    (["--topology", "dgx-z100"], "dgx-h100"),
    (["--hidden", "0"], "--hidden"),
    (["--hidden", "4096", "--heads", "12"], "heads"),
    (["--micro-batch", "-1"], "--micro-batch"),
    (["--dtype", "int8"], "--dtype"),
    (["--tp", "eight"], "--tp: expected a positive integer"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, match):
    code, out, err = run(capsys, "predict", *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and match in err and "Traceback" not in err


def test_bad_model_yaml_names_the_key(capsys, write_yaml):
    path = write_yaml({"name": "x", "layers": 2, "hidden": 64, "haeds": 4, "vocab": 10,
                       "seq_len": 8}, "m.yaml")
    code, _, err = run(capsys, "predict", "--model", str(path), "--tp", "1")
    assert code == 2 and "haeds" in err and err.count("\n") == 1


def test_no_torch_matplotlib_or_networkx_on_the_predict_path():
    """Predicting runs on the op graph's compiled template: the networkx DiGraph is built only
    when asked for (``Prediction.graph``, ``layer_graph``)."""
    code = ("import sys; from tpsim.cli import main; main(['predict', '--model', 'gpt3', "
            "'--tp', '8', '--json']); print(sorted(m for m in ('torch', 'matplotlib', "
            "'networkx') if m in sys.modules), file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=60)
    assert r.returncode == 0 and r.stderr.strip().splitlines()[-1] == "[]"
    json.loads(r.stdout)


def test_console_script_error_has_no_traceback():
    r = subprocess.run([sys.executable, "-m", "tpsim", "predict", "--model", "gpt3", "--tp", "5"],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1


def test_megatron_argument_names_are_aliases(capsys):
    """Megatron-LM's names for the same settings (megatron/training/arguments.py) give the same
    prediction as tpsim's flags."""
    import json
    ours = ["--tp", "4", "--pp", "2", "--dp", "2", "--global-batch", "64",
            "--distributed-optimizer", "--micro-batch", "2", "--seq", "1024"]
    theirs = ["--tensor-model-parallel-size", "4", "--pipeline-model-parallel-size", "2",
              "--dp", "2", "--global-batch-size", "64", "--use-distributed-optimizer",
              "--micro-batch-size", "2", "--seq-length", "1024"]
    outs = []
    for flags in (ours, theirs):
        code, out, _ = run(capsys, "predict", "--model", "gpt3-1.3b", "--topology",
                           "dgx-a100-hdr-cluster", "--nodes", "2", *flags, "--json")
        assert code == 0
        outs.append(json.loads(out))
    assert outs[0] == outs[1]
    code, _, err = run(capsys, "predict", "--model", "gpt3-1.3b", "--expert-tensor-parallel-size",
                       "2")
    assert code == 2 and "--expert-tp" in err and "has no experts" in err


@pytest.mark.parametrize("command, model, key, seq_len", [
    ("predict", "Meta-Llama-3-8B", "max_position_embeddings", "8,192"),
    ("predict", "gpt2/config.json", "n_positions", "1,024"),
    ("search", "gpt2", "n_positions", "1,024"),
])
def test_hf_config_without_seq_says_which_length(capsys, command, model, key, seq_len):
    """A Hugging Face config without --seq: one stderr line naming the sequence length taken
    and the config key it came from; with --seq, or a preset, nothing."""
    path = str(REPO / "tests" / "data" / "hf" / model)
    argv = [command, "--model", path, "--topology", "dgx-a100"] + (
        ["--gpus", "8", "--global-batch", "8", "--top", "1"] if command == "search" else
        ["--tp", "1"])
    assert main(argv) == 0
    err = capsys.readouterr().err.splitlines()
    assert [ln for ln in err if "--seq" in ln] == \
        [f"tpsim: note: {path}: no --seq, so seq_len {seq_len} from its {key}; pass --seq for "
         "the length you run at"]
    assert main(argv + ["--seq", "512"]) == 0
    assert "--seq" not in capsys.readouterr().err
    assert main([command, "--model", "gpt3-125m"] + argv[3:]) == 0
    assert "--seq" not in capsys.readouterr().err


def test_dropout_help_says_the_fused_kernel_pays_for_it(capsys):
    """The attention dropout inside a fused kernel is priced: --dropout's help says where."""
    text = help_text(capsys, "predict")
    assert "every dropout: embedding, residual, attention" in text
    assert "tpsim.cost.attention_dropout" in text
