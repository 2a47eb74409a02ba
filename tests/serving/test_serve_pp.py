"""Pipeline parallelism in the engine (tpsim.serving.step_model's round of micro-batches):
a decode round in closed form against pp = 1's tables, a lone request's TTFT the prefill
plus the stage transfers, more cache per GPU, more throughput offline, energy over tp x pp."""
from __future__ import annotations

import math

import pytest

from tpsim.cluster.power import job_energy_j
from tpsim.cluster.topology import load_topology
from tpsim.serving.engine import serve
from tpsim.serving.infer import _Server
from tpsim.serving.step_model import StepModel
from tpsim.spec.model import load_model


@pytest.fixture(scope="module")
def models():
    m, topo = load_model("llama3-70b"), load_topology("dgx-h100")
    out = {}
    for pp in (1, 2):
        srv = _Server(m, topo, 4, pp, "bf16", "bf16", "bf16", "nccl", False)
        out[pp] = StepModel(srv, 2048, 256, 4096)
    return out


def test_a_decode_round_is_one_micro_batch_through_every_layer(models):
    """pp = 2, B sequences: n_layers (D(B/2) + k sum L / 2) + E + O + R at B/2."""
    one, two = models[1], models[2]
    for b, kv in ((64, 64 * 1500), (200, 200 * 3000), (1, 900)):
        g = min(2, b)
        want = one.decode_step_s(b / g, kv / g) + two.r_table(b / g)
        assert float(two.decode_step_s(b, kv)) == pytest.approx(float(want), rel=1e-12)
    assert two.r_table.full()[1].min() > 0 and one.r_table is None


def test_a_chunk_is_never_split_across_micro_batches(models):
    one, two = models[1], models[2]
    alone = two.mixed_step_s([(2000, 0)], 0, 0.0, 1)
    r = float(two.r_table(2000))
    assert alone == pytest.approx(one.mixed_step_s([(2000, 0)], 0, 0.0, 1) + r, rel=1e-12)
    split = two.mixed_step_s([(1000, 0), (1000, 0)], 0, 0.0, 2)
    assert split < alone


def test_a_lone_request_pays_the_stage_transfers():
    kw = dict(rate=0.02, requests=20, prompt=1024, gen=16)
    a = serve("llama3-70b", "dgx-h100", tp=4, **kw)
    b = serve("llama3-70b", "dgx-h100", tp=4, pp=2, **kw)
    assert a.latency.ttft_s.p50 < b.latency.ttft_s.p50 < 1.05 * a.latency.ttft_s.p50
    assert b.engine.kv_cache_tokens > 1.9 * a.engine.kv_cache_tokens


def test_offline_pp_serves_more_and_its_energy_counts_every_gpu():
    kw = dict(requests=300, prompt=512, gen=64)
    a = serve("llama3-70b", "dgx-h100", tp=4, **kw)
    b = serve("llama3-70b", "dgx-h100", tp=4, pp=2, **kw)
    assert b.throughput.output_tokens_per_s > 1.2 * a.throughput.output_tokens_per_s
    e, t = b.energy, b.throughput
    want = job_energy_j(load_topology("dgx-h100"), 8, t.duration_s, e.prefill_busy_s,
                        e.decode_busy_s)
    assert e.j == pytest.approx(want, rel=1e-12) and not math.isinf(e.j)
    assert b.inputs.pp == 2
