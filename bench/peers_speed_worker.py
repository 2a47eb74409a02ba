"""Times Calculon's and llm-analysis's Python APIs on bench/peers_speed.py's jobs, inside the peers'
own environment.

Not part of tpsim and never imported by it: ``bench/peers_speed.py`` starts it with the Python of
an environment holding ``llm-analysis==0.2.2`` and Calculon (github.com/calculon-ai/calculon),
writes {"jobs": [...], "calculon_system": path, "repeats": n} as JSON on stdin and reads
{tool: {job id: {"call_s": median CPU s of a call, "step_s": its step time} or {"error"}}}
from stdout.

How each peer is asked (its shipped defaults, nothing tuned):
* Calculon: ``Llm(app).compile(system, exe)`` then ``run(system)`` (what ``calculon llm`` runs),
  GPT-3 175B as its models/gpt3-175B.json states it, its systems/a100_80g.json, the job's
  TP/PP/DP, micro-batch 1, fp16, full recomputation, TP over NVLink (network 0), PP and DP
  over the second network; step = its ``total_time``.
* llm-analysis ``train``: GPT-3 175B's shape as a model file (96 layers, hidden 12288, 96 heads,
  FFN 49152, vocabulary 50257), GPU a100-sxm-80gb, w16a16e16, full recomputation
  (activation_recomputation=2), its default efficiencies; step = ``latency_per_iter``.
"""
import json
import logging
import statistics
import sys
import tempfile
import time

from infer_peers_worker import run_case      # beside this file: the peers' quiet, safe call

GPT3 = {"hidden": 12288, "feedforward": 49152, "seq_size": 2048, "attn_heads": 96,
        "attn_size": 128, "num_blocks": 96}          # Calculon's models/gpt3-175B.json
LA_GPT3 = {"name": "gpt3-175b", "num_layers": 96, "n_head": 96, "hidden_dim": 12288,
           "vocab_size": 50257, "max_seq_len": 2048, "ffn_embed_dim": 49152,
           "model_type": "gpt"}


def calculon_exe(job):
    return {"num_procs": job["gpus"], "tensor_par": job["tp"], "pipeline_par": job["pp"],
            "data_par": job["dp"], "tensor_par_net": 0, "pipeline_par_net": 1,
            "data_par_net": 1, "batch_size": job["global_batch"], "microbatch_size": 1,
            "datatype": "float16", "fused_activation": True, "attention_type": "multihead",
            "activation_recompute": "full", "pipeline_interleaving": 1,
            "optimizer_sharding": False, "tensor_par_comm_type": "ar",
            "tensor_par_overlap": "none", "seq_par_ag_redo": False, "data_par_overlap": False,
            "weight_offload": False, "activations_offload": False, "optimizer_offload": False,
            "training": True}


def calculon_call(job, system_path):
    import calculon
    from calculon.llm import Llm
    syst = calculon.System(calculon.io.read_json_file(system_path))
    model = Llm(Llm.Application(GPT3), logging.getLogger("calculon"))
    model.compile(syst, Llm.Execution.from_json(calculon_exe(job)))
    model.run(syst)
    return model.get_stats_json(False)["total_time"]


def llm_analysis_call(job, model_path):
    from llm_analysis.analysis import train
    r = train(model_name=model_path, gpu_name="a100-sxm-80gb", dtype_name="w16a16e16",
              tp_size=job["tp"], pp_size=job["pp"], dp_size=job["dp"],
              global_batch_size=job["global_batch"], batch_size_per_gpu=1,
              seq_len=job["seq"], activation_recomputation=2, log_level="ERROR")
    return r["latency_per_iter"]


def timed(fn, *args, repeats):
    """{call_s: the median CPU seconds of ``repeats`` calls after a first (imports, file reads),
    step_s: the step time the call returned}, or why it failed (infer_peers_worker.run_case)."""
    def measure():
        step, calls = fn(*args), []
        for _ in range(repeats):
            t0 = time.process_time()
            fn(*args)
            calls.append(time.process_time() - t0)
        return {"call_s": statistics.median(calls), "step_s": step}
    return run_case(fn.__name__, measure)


def main():
    ask = json.load(sys.stdin)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(LA_GPT3, f)
    out = {"Calculon": {}, "llm-analysis": {}}
    for job in ask["jobs"]:
        out["Calculon"][job["id"]] = timed(calculon_call, job, ask["calculon_system"],
                                           repeats=ask["repeats"])
        out["llm-analysis"][job["id"]] = timed(llm_analysis_call, job, f.name,
                                               repeats=ask["repeats"])
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
