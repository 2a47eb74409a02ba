"""Runs llm-analysis and GenZ on bench/infer_peers.py's cases, inside the peers' own environment.

Not part of tpsim and never imported by it: ``bench/infer_peers.py`` starts it with the Python
of an environment holding ``llm-analysis==0.2.2`` and ``genz-llm==0.0.16``, writes the cases as
JSON on stdin and reads {case id: {tool: {ttft_s, tpot_s} or {error}}} from stdout.

How each peer is asked (its shipped defaults, nothing tuned):
* llm-analysis ``infer``: its Llama-2-70B config (upstage_Llama-2-70b-instruct-v2; it rounds the
  FFN to 4 x hidden, needing ffn % hidden == 0) or the same with Llama 3's vocabulary; GPU
  h100-sxm-80gb / a100-sxm-80gb (H200: its H100 entry with the H200 datasheet's 141 GB and
  4.8 TB/s); dtype w16a16e16, or w8a8e16 for fp8 (its 8-bit peak); efficiencies at its
  defaults (1.0: peak FLOP/s and bandwidth). ttft = prefill_latency, tpot = decode_latency.
* GenZ ``prefill_moddeling`` / ``decode_moddeling`` (Bb = 1, no beams): meta-llama/Llama-2-70B
  or meta-llama/Llama-3.1-70B on H100_GPU / A100_80GB_GPU (H200: the datasheet's 989 TFLOP/s,
  141 GB, 4.8 TB/s, 450 GB/s), bits bf16 or fp8, system_eff 1; the decode step at
  output_tokens = gen / 2, the mean cache length.
"""
import contextlib
import io
import json
import sys
import tempfile
import warnings

LA_MODELS = {"llama2-70b": "upstage_Llama-2-70b-instruct-v2"}
LA_LLAMA3 = {"name": "llama3-70b", "num_layers": 80, "n_head": 64, "hidden_dim": 8192,
             "vocab_size": 128256, "max_seq_len": 8192, "num_key_value_heads": 8,
             "ffn_embed_dim": 32768, "model_type": "llama"}
LA_GPUS = {"dgx-h100": "h100-sxm-80gb", "dgx-a100": "a100-sxm-80gb", "dgx-h200": "h200-sxm-141gb"}
GENZ_MODELS = {"llama2-70b": "meta-llama/Llama-2-70B", "llama3-70b": "meta-llama/Llama-3.1-70B"}
GENZ_SYSTEMS = {"dgx-h100": "H100_GPU", "dgx-a100": "A100_80GB_GPU",
                "dgx-h200": {"Flops": 989, "Memory_size": 141, "Memory_BW": 4800, "ICN": 450,
                             "real_values": True}}


def llm_analysis(case, llama3_path):
    from llm_analysis import config
    from llm_analysis.analysis import infer
    if "h200-sxm-141gb" not in config.gpu_configs:
        h100 = config.gpu_configs["h100-sxm-80gb"]
        config.gpu_configs["h200-sxm-141gb"] = config.GPUConfig(**{
            **vars(h100), "name": "h200-sxm-141gb", "mem_per_GPU_in_GB": 141,
            "hbm_bandwidth_in_GB_per_sec": 4800})
    model = LA_MODELS.get(case["model"], llama3_path)
    r = infer(model_name=model, gpu_name=LA_GPUS[case["topology"]],
              dtype_name="w8a8e16" if case["dtype"] == "fp8" else "w16a16e16",
              tp_size=case["tp"], batch_size_per_gpu=case["batch"], seq_len=case["prompt"],
              num_tokens_to_generate=case["gen"], log_level="ERROR",
              kv_cache_dtype_bytes=1 if case["kv_dtype"] == "fp8" else 2)
    return {"ttft_s": r["prefill_latency"], "tpot_s": r["decode_latency"]}


def genz(case):
    from GenZ import decode_moddeling, prefill_moddeling
    kw = dict(model=GENZ_MODELS[case["model"]], batch_size=case["batch"],
              system_name=GENZ_SYSTEMS[case["topology"]], tensor_parallel=case["tp"],
              bits="fp8" if case["dtype"] == "fp8" else "bf16")
    pre = prefill_moddeling(input_tokens=case["prompt"], **kw)
    dec = decode_moddeling(input_tokens=case["prompt"], output_tokens=case["gen"] // 2, Bb=1,
                           **kw)
    return {"ttft_s": pre["Latency"] / 1e3, "tpot_s": dec["Latency"] / 1e3}


def run_case(tool, fn, *args):
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {k: float(v) for k, v in fn(*args).items()}
    except Exception as e:   # a peer that cannot price a case says why, in its column
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:90] if str(e) else ''}"}


def main():
    cases = json.load(sys.stdin)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(LA_LLAMA3, f)
    out = {}
    for case in cases:
        out[case["id"]] = {"llm-analysis": run_case("llm-analysis", llm_analysis, case, f.name),
                           "GenZ": run_case("GenZ", genz, case)}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
