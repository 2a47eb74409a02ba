"""Expert parallelism in the engine (tpsim serve --ep): a step's sequences spread over ep
attention replicas priced at ep (tpsim.serving.step_model), fewer expert bytes per GPU per
decode step, the cache over the ep replicas' GPUs in closed form, energy over tp x ep GPUs;
serve-search tries ep > 1 for a mixture-of-experts model and its candidates meet the targets."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from tpsim.cluster.power import job_energy_j
from tpsim.cluster.topology import load_topology
from tpsim.layer.infer_moe import expected_distinct_experts
from tpsim.serving.engine import kv_cache_blocks, serve
from tpsim.serving.engine_memory import engine_headroom
from tpsim.serving.infer import _Server
from tpsim.serving.memory import activations_per_sequence, kv_bytes_per_token, weights_per_gpu
from tpsim.serving.serve_search import serve_search
from tpsim.serving.step_model import StepModel, direct_decode_s
from tpsim.spec.model import load_model
from tpsim.spec.serve import ServeSettings
from tpsim.spec.serving import ServingLayout

MODEL = "qwen3-30b-a3b"


@pytest.fixture(scope="module")
def servers():
    m, topo = load_model(MODEL), load_topology("dgx-h100")
    return {ep: _Server(m, topo, 1, 1, "bf16", "bf16", "bf16", "nccl", False, ep)
            for ep in (1, 2)}


def test_a_decode_step_is_one_replicas_share_priced_at_ep(servers):
    """ep = 2, B sequences at cache length L: the step of one replica's B/2 sequences,
    layers x decode layer(B/2, L) + ends(B/2), as priced directly (at the tables' points)."""
    sm = StepModel(servers[2], 2048, 128, 4096)
    for b, kv_len in ((16, 1500), (64, 3000), (2, 800)):
        want = direct_decode_s(servers[2], b // 2, kv_len)
        assert float(sm.decode_step_s(b, b * kv_len)) == pytest.approx(want, rel=1e-9)


def _expert_weight_bytes(srv, b: int) -> float:
    """The grouped expert GEMMs' bytes in one decode layer of ``b`` sequences per replica."""
    sim = srv.sim(srv.decode_tpl, srv.dims(b, 1, 2000))
    names = sim.timeline.names
    return sum(op.bytes for name, op in zip(names, sim.ops) if name.startswith("fwd.experts.fc"))


def test_ep_reads_fewer_expert_bytes_per_gpu_per_decode_step(servers):
    """The same 64 sequences: at ep = 1 one GPU runs the D(64) experts they hit; at ep = 2
    each GPU serves 32 of them and runs D(64) / 2 of its 64 experts (uniform routing,
    tpsim.layer.infer_moe): about half the expert weights read per GPU."""
    m = load_model(MODEL)
    one, two = _expert_weight_bytes(servers[1], 64), _expert_weight_bytes(servers[2], 32)
    d = expected_distinct_experts(m.experts, m.experts_per_token, 64)
    assert two < one
    assert two / one == pytest.approx(max(1, round(d / 2)) / round(d), rel=0.05)


def test_the_cache_is_the_ep_replicas_blocks_in_closed_form():
    """num_gpu_blocks = ep floor((usable - weights(E/ep experts) - activations) / (block x
    per-token bytes)), usable (vLLM's default reserve) less the allocator's waste on the
    activations: more than ep times
    ep = 1's, the experts' weights split."""
    m, topo = load_model(MODEL), load_topology("dgx-h100")
    st = ServeSettings()
    one = kv_cache_blocks(m, topo, ServingLayout(tp=1, ep=1), st)
    two = kv_cache_blocks(m, topo, ServingLayout(tp=1, ep=2), st)
    act = activations_per_sequence(m, 1, 1, st.max_num_batched_tokens, "bf16")
    h = engine_headroom("vllm", topo.device, 1)         # vLLM's gpu_memory_utilization 0.9
    usable = topo.device.usable_bytes(h, act)           # the allocator's waste on the profile's
    room = usable - weights_per_gpu(m, 1, 1, "bf16", "bf16", 2) - act
    per = kv_bytes_per_token(m, 1, 1, "bf16")
    assert two.num_gpu_blocks == 2 * math.floor(room / (st.block_size * per))
    assert two.weights_bytes < one.weights_bytes and two.num_gpu_blocks > 2 * one.num_gpu_blocks
    assert two.kv_cache_bytes == two.num_gpu_blocks // 2 * st.block_size * per


def test_serve_at_ep_serves_more_and_counts_every_gpu():
    """Offline, two replicas of tp 1 at ep 2 against one GPU: more tokens/s over all, and
    the energy over tp x ep = 2 GPUs (tpsim.cluster.power.job_energy_j)."""
    kw = dict(requests=200, prompt=512, gen=64)
    a = serve(MODEL, "dgx-h100", tp=1, **kw)
    b = serve(MODEL, "dgx-h100", tp=1, ep=2, **kw)
    assert b.inputs.ep == 2 and int(b.generated.sum()) == int(a.generated.sum())
    assert b.throughput.output_tokens_per_s > 1.3 * a.throughput.output_tokens_per_s
    e, t = b.energy, b.throughput
    want = job_energy_j(load_topology("dgx-h100"), 2, t.duration_s, e.prefill_busy_s,
                        e.decode_busy_s)
    assert e.j == pytest.approx(want, rel=1e-12)


def test_serve_search_tries_ep_for_a_mixture_of_experts_model():
    """qwen3-30b-a3b on 8 GPUs: MoE is searched (not refused), ep > 1 splits are priced,
    every candidate meets its targets and its GPUs add up; seconds of CPU."""
    t0 = time.process_time()
    r = serve_search(MODEL, "dgx-h100", gpus=8, ttft_p99_s=0.5, tpot_p99_s=0.05,
                     layout=ServingLayout(prompt=512, gen=64),
                     settings=ServeSettings(requests=60), max_num_seqs=(128,),
                     disaggregated=False, top=50)
    assert time.process_time() - t0 < 20
    assert any(c.ep > 1 for c in r.candidates)
    for c in r.candidates:
        assert c.ttft_s_p99 <= 0.5 and c.tpot_s_p99 <= 0.05
        assert c.tp * c.pp * c.ep * c.replicas == 8 and (c.ep == 1 or c.pp == 1)
    assert np.isfinite([c.output_tokens_per_s for c in r.candidates]).all()
