"""tpsim.serve_search: every candidate meets its targets, best first, its GPUs add up; a
required rate is served; an unreachable target leaves none; the KV transfer crosses the
topology's levels; a decode instance with its prompt cached decodes from its first step;
energy and cost per output token in closed form; fast and deterministic."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

import tpsim
from tpsim.base.errors import ConfigError
from tpsim.cluster.topology import load_topology
from tpsim.serving.pools import kv_pair, kv_transfer_s
from tpsim.serving.serve_search import serve_search, splits
from tpsim.serving.serve_tally import result_key
from tpsim.spec.model import load_model
from tpsim.spec.serve import ServeSettings
from tpsim.spec.serving import ServingLayout

LAY = ServingLayout(prompt=512, gen=64)
ST = ServeSettings(requests=120, usd_per_gpu_hour=2.0)
TTFT, TPOT = 0.25, 0.015


@pytest.fixture(scope="module")
def result():
    t0 = time.process_time()
    r = serve_search("llama3-8b", "dgx-h100", gpus=4, ttft_p99_s=TTFT, tpot_p99_s=TPOT,
                     layout=LAY, settings=ST, top=50)
    return r, time.process_time() - t0


def test_every_candidate_meets_its_targets(result):
    r, _ = result
    assert r.candidates
    assert {c.mode for c in r.candidates} == {"aggregated", "disaggregated"}
    for c in r.candidates:
        assert c.ttft_s_p99 <= TTFT and c.tpot_s_p99 <= TPOT
        assert c.ttft_s_p50 <= c.ttft_s_p99 and c.tpot_s_p50 <= c.tpot_s_p99


def test_best_first_and_the_gpus_add_up(result):
    r, _ = result
    per_gpu = [c.output_tokens_per_s_per_gpu for c in r.candidates]
    assert per_gpu == sorted(per_gpu, reverse=True)
    for c in r.candidates:
        assert c.output_tokens_per_s_per_gpu == pytest.approx(c.output_tokens_per_s / 4)
        if c.mode == "aggregated":
            assert c.tp * c.pp * c.ep * c.replicas == 4 and c.prefill_tp is None
        else:
            assert c.prefill_gpus + c.decode_gpus == 4
            assert c.prefill_gpus == c.prefill_tp * c.prefill_pp * c.prefill_ep * \
                c.prefill_replicas
            assert c.decode_gpus == c.tp * c.pp * c.ep * c.replicas and c.kv_transfer_s > 0


def test_cost_is_the_gpus_rent_over_the_tokens(result):
    r, _ = result
    for c in r.candidates:
        assert c.usd_per_million_output_tokens == pytest.approx(
            4 * 2.0 / 3600 / c.output_tokens_per_s * 1e6)
        assert c.j_per_output_token > 0


def test_search_is_fast(result):
    assert result[1] < 20.0, result[1]       # ~3 CPU s alone


def _counted(r) -> int:
    return sum(len(c.max_num_seqs_alike) for c in r.candidates) + sum(r.dropped.values())


def test_every_deployment_considered_is_shown_or_dropped_once(result):
    r, _ = result
    assert r.deployments == _counted(r) > len(r.candidates)


def test_twins_at_another_max_num_seqs_are_one_row_naming_both(result):
    r, _ = result
    keys = [result_key(c) for c in r.candidates]
    assert len(set(keys)) == len(keys)               # no two rows alike
    assert (64, 256) in {c.max_num_seqs_alike for c in r.candidates}
    assert all(c.max_num_seqs in c.max_num_seqs_alike for c in r.candidates)


def test_a_rate_and_a_top_keep_the_count():
    r = serve_search("llama3-8b", "dgx-h100", gpus=2, ttft_p99_s=TTFT, tpot_p99_s=TPOT,
                     layout=LAY, settings=ServeSettings(requests=50), top=1, rate=60.0)
    assert r.deployments == _counted(r) and len(r.candidates) <= 1
    assert r.dropped["rate"] > 0 and r.dropped["top"] > 0


def test_a_required_rate_is_served():
    kw = dict(gpus=2, ttft_p99_s=TTFT, tpot_p99_s=TPOT, layout=LAY,
              settings=ServeSettings(requests=50), max_num_seqs=(16, 256), disaggregated=False)
    free = serve_search("llama3-8b", "dgx-h100", **kw)
    rates = sorted(c.requests_per_s for c in free.candidates)
    need = (rates[0] + rates[-1]) / 2
    r = serve_search("llama3-8b", "dgx-h100", rate=need, **kw)
    assert [c.requests_per_s for c in r.candidates] == [x for x in rates[::-1] if x >= need]
    assert r.dropped["rate"] == sum(x < need for x in rates)


def test_a_ttft_below_the_unloaded_prefill_leaves_none():
    pre = tpsim.infer("llama3-8b", "dgx-h100", tp=2, batch=1, prompt=512, gen=64).prefill
    r = serve_search("llama3-8b", "dgx-h100", gpus=2, ttft_p99_s=pre.time_s / 10,
                     tpot_p99_s=1.0, layout=LAY, settings=ServeSettings(requests=40),
                     max_num_seqs=(64,))
    assert r.candidates == () and r.dropped["targets"] > 0


def test_splits_divide_the_gpus_and_the_heads():
    m = load_model("llama3-70b")
    got = splits(m, load_topology("dgx-h100"), 8)
    assert (8, 1, 1) in got and (1, 8, 1) in got and (2, 4, 1) in got
    assert all(8 % (tp * pp) == 0 and m.heads % tp == 0 and ep == 1 for tp, pp, ep in got)


def test_splits_of_a_mixture_of_experts_model_try_expert_parallelism():
    """qwen3-30b-a3b (128 experts) on 8 GPUs: ep > 1 at pp = 1, dividing gpus / tp and the
    experts; the dense splits as before."""
    m = load_model("qwen3-30b-a3b")
    got = splits(m, load_topology("dgx-h100"), 8)
    assert {(1, 1, 8), (2, 1, 4), (4, 1, 2), (8, 1, 1), (1, 8, 1)} <= set(got)
    assert all(8 % (tp * pp * ep) == 0 and m.experts % ep == 0 and (ep == 1 or pp == 1)
               for tp, pp, ep in got)


def test_kv_transfer_over_the_nic_is_slower_than_nvlink():
    """Inside a node the pair is on NVLink; across nodes on one NIC: bytes / its bandwidth."""
    m, topo = load_model("llama3-70b"), load_topology("dgx-h100-ndr-cluster")
    prompts = np.array([1000, 4000])
    lay = ServingLayout(tp=4)
    near = kv_transfer_s(m, topo, lay, prompts, kv_pair(4, 16))
    far = kv_transfer_s(m, topo, lay, prompts, kv_pair(8, 16))
    assert (far > 2 * near).all() and far[1] > far[0]
    per_gpu = 2 * m.layers * m.kv_heads_per_rank(4) * m.head_dim * 2 * 4000
    nic = topo.network.bandwidth_Bps
    assert far[1] >= per_gpu / nic


def test_kv_transfer_of_a_pipeline_stage_is_its_layers_share():
    """A prefill instance of pp stages: each GPU sends its stage's layers' cache, so the
    transfer is send_recv of prompt x kv_bytes_per_token(tp, pp) bytes, a half at pp 2."""
    from tpsim.cost.collectives import send_recv_time
    m, topo = load_model("llama3-70b"), load_topology("dgx-h100-ndr-cluster")
    prompts, pair = np.array([4000]), kv_pair(8, 16)
    one = kv_transfer_s(m, topo, ServingLayout(tp=4), prompts, pair)[0]
    two = kv_transfer_s(m, topo, ServingLayout(tp=4, pp=2), prompts, pair)[0]
    per_gpu = 2 * (m.layers // 2) * m.kv_heads_per_rank(4) * m.head_dim * 2 * 4000
    assert two == pytest.approx(send_recv_time(per_gpu, topo.place(pair), topo).time_s,
                                rel=1e-12)
    assert two < one


def test_pool_shapes_pipeline_or_expert_parallel_below_the_deployment():
    """Each pool's instances: tp (taken by the model, within a node) x pp (powers of two) at
    ep 1, or tp x ep (dividing the experts) at pp 1, fewer GPUs than the deployment's."""
    from types import SimpleNamespace
    from tpsim.serving.disagg import pool_shapes
    topo = load_topology("dgx-h100")
    dense = SimpleNamespace(m=load_model("llama3-8b"), topo=topo, gpus=8)
    assert pool_shapes(dense) == [(1, 1, 1), (1, 2, 1), (1, 4, 1), (2, 1, 1), (2, 2, 1),
                                  (4, 1, 1)]
    moe = SimpleNamespace(m=load_model("mixtral-8x7b"), topo=topo, gpus=4)
    assert pool_shapes(moe) == [(1, 1, 1), (1, 2, 1), (1, 1, 2), (2, 1, 1)]


def test_a_cached_prompt_decodes_from_its_first_step():
    """A decode instance at low load: each request's tokens at infer's batch-1 TPOT plus the
    engine's host time of a one-sequence step (run between steps)."""
    from tpsim.serving.pools import instance
    st = ServeSettings(requests=20, rate=0.05)
    inst = instance(load_model("llama3-8b"), load_topology("dgx-h100"),
                    ServingLayout(tp=1, prompt=1024, gen=64), st, "decode", 1100, {})
    p = inst.run(0.05)
    want = tpsim.infer("llama3-8b", "dgx-h100", tp=1, prompt=1024, gen=64).decode
    host = (st.host_step_us + st.host_seq_us) * 1e-6
    assert p.tpot_s.p50 == pytest.approx(want.time_per_token_s + host, rel=0.02)


@pytest.mark.parametrize("rate, top", [(None, 3), (100.0, 10)])
def test_pruning_changes_nothing_but_the_runs(rate, top):
    """A replica skipped for its bound (its offline rate below the rate asked, or below the
    top-th row's tokens/s per GPU) changes no candidate, count or reason: fewer runs only."""
    kw = dict(gpus=4, ttft_p99_s=0.3, tpot_p99_s=0.02, rate=rate, top=top, max_num_seqs=(256,),
              layout=ServingLayout(prompt=512, gen=64), settings=ServeSettings(requests=40))
    pruned, full = (serve_search("llama3-8b", "dgx-h100", prune=p, **kw) for p in (True, False))
    assert pruned.candidates == full.candidates and pruned.dropped == full.dropped
    assert (pruned.deployments, pruned.configurations) == (full.deployments,
                                                           full.configurations)
    assert pruned.runs < full.runs


def test_an_instance_at_a_second_max_num_seqs_runs_as_a_fresh_one():
    """The search's step tables are per max_num_seqs: an engine of 256 sequences after one
    of 8 at the same split runs as one built alone (its decode steps above 8 sequences)."""
    from dataclasses import replace
    from tpsim.serving.pools import instance
    m, topo, lay = load_model("llama3-8b"), load_topology("dgx-h100"), ServingLayout(tp=1)
    st, tables = ServeSettings(requests=40, max_num_seqs=8), {}
    args = (m, topo, lay, replace(st, max_num_seqs=256), "both", 1200)
    instance(m, topo, lay, st, "both", 1200, tables)
    shared, alone = instance(*args, tables), instance(*args, {})
    assert shared.sm.max_seqs == 256 and shared.run(math.inf) == alone.run(math.inf)


@pytest.mark.parametrize("kw, flag", [(dict(gpus=9), "--gpus"), (dict(ttft_p99_s=0), "--ttft"),
                                      (dict(rate=-1.0), "--rate"),
                                      (dict(max_num_seqs=(0,)), "--max-num-seqs")])
def test_bad_arguments_name_their_flag(kw, flag):
    args = dict(gpus=2, ttft_p99_s=1.0, tpot_p99_s=1.0) | kw
    with pytest.raises(ConfigError, match=flag):
        serve_search("llama3-8b", "dgx-h100", **args)


def test_a_closed_loop_is_refused():
    with pytest.raises(ConfigError, match="--users"):
        serve_search("llama3-8b", "dgx-h100", gpus=2, ttft_p99_s=TTFT, tpot_p99_s=TPOT,
                     settings=ServeSettings(users=4))
