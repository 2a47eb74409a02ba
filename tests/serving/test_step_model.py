"""The step-time tables (tpsim.serving.step_model) against direct pricing by infer's
functions: equal at table points, within 2% between them; DeepSeek-V3 mixes dense and MoE
layers, MLA and decode expert reads that jump with the batch."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from tpsim.base.errors import ConfigError

from tpsim.cluster.topology import load_topology
from tpsim.serving.infer import _Server
from tpsim.serving.step_model import (StepModel, direct_decode_s, direct_prefill_s, graph_batch,
                                      grid)
from tpsim.spec.model import load_model
from tpsim.spec.serve import ServeSettings


@pytest.fixture(scope="module", params=[("llama2-70b", 8), ("llama2-7b", 1),
                                        ("deepseek-v3", 8)])
def model(request):
    name, tp = request.param
    srv = _Server(load_model(name), load_topology("dgx-h100"), tp, 1, "bf16", "bf16", "bf16",
                  "nccl", False)
    return srv, StepModel(srv, 8192, 256, 8192)


def test_grid_is_dense_then_geometric():
    g = grid(1000)
    assert g[:8] == list(range(1, 9)) and g[-1] == 1000
    assert max(b / a for a, b in zip(g[7:], g[8:])) < 1.16


def test_a_whole_prompt_prices_as_infer_prefill(model):
    srv, sm = model
    err = [sm.mixed_step_s([(p, 0)], 0, 0, 1) / direct_prefill_s(srv, p) - 1
           for p in range(1, 8192, 61)]
    assert np.abs(err).max() < 0.02


def test_decode_steps_price_as_infer_decode(model):
    srv, sm = model
    err = [sm.decode_step_s(b, b * L) / direct_decode_s(srv, b, L) - 1
           for b in (1, 3, 13, 64, 100, 255) for L in (2, 333, 2049, 7000)]
    assert np.abs(err).max() < 0.02


def test_chunks_add_up_to_the_prompt(model):
    """A chunk after s cached tokens does the causal pairs the whole prompt has beyond the
    first s: A(c, s) = a(c + s) - a(c + s) w(s, 0) / w(c + s, 0)."""
    _, sm = model
    whole = float(sm.attention(4000, 0))
    rest = float(sm.attention(2500, 1500))
    assert rest == pytest.approx(whole * (1 - 1500 * 1501 / (4000 * 4001)), rel=1e-12)
    assert rest > float(sm.attention(2500, 0))


def test_context_makes_a_chunk_dearer(model):
    _, sm = model
    costs = [sm.mixed_step_s([(512, s)], 0, 0, 1) for s in (0, 2048, 6000)]
    assert costs == sorted(costs) and costs[0] < costs[-1]


def test_a_decode_step_runs_the_graph_of_the_next_captured_size():
    """Captured sizes 1, 2, 4, 8, 16, ...: 3 runs at 4, 5-8 at 8, 9 at 16; the cache reads
    stay at the step's own sequences, so a step of b sequences padded to b' costs the
    unpadded step of b' less the reads of b' - b sequences."""
    assert list(graph_batch(np.arange(1, 18), 8)) == [1, 2, 4, 4] + [8] * 4 + [16] * 8 + [24]
    assert graph_batch(9, 0) == 9
    srv = _Server(load_model("llama2-7b"), load_topology("dgx-a100"), 1, 1, "bf16", "bf16",
                  "bf16", "nccl", False)
    plain, padded = (StepModel(srv, 2048, 256, 4096, graph_align=a) for a in (0, 8))
    for b, kv in ((3, 3 * 500), (9, 9 * 700), (130, 130 * 900)):
        bp = float(graph_batch(b, 8))
        out = plain.o_table(b) - plain.o_table(bp)
        want = plain.decode_step_s(bp, kv) + out
        assert float(padded.decode_step_s(b, kv)) == pytest.approx(float(want), rel=1e-9)
        assert float(padded.decode_step_s(b, kv)) >= float(plain.decode_step_s(b, kv))


def test_an_eager_prefill_step_lasts_the_longer_of_the_gpu_and_the_host_issue(model):
    """max(t_gpu, N c), N the templates' host ops: n_layers x the prefill layer's + the ends'."""
    srv, sm = model
    tg = srv.tp > 1
    n = (sum(k * tpls[0].host_ops[0] for k, *tpls, _ in srv.mix)
         + (2 if tg else 1) + (4 if tg else 3))
    assert sm.forward_ops == n
    for p in (1, 300, 4000):
        gpu = sm.mixed_step_s([(p, 0)], 0, 0, 1)
        for c in (1e-6, 22.1e-6, 1e-3):
            assert sm.mixed_step_s([(p, 0)], 0, 0, 1, c) == max(gpu, n * c)


def test_decode_steps_past_the_largest_graph_run_eagerly():
    """--cuda-graph-max-bs M: a step whose graph (padded to a multiple of 8) is at most M
    replays it; a larger one runs eagerly at its own rows, max(its GPU time, N c), N the
    forward's host ops at the topology's engine_dispatch_us c (356 ops for Llama 3 8B)."""
    srv = _Server(load_model("llama3-8b"), load_topology("dgx-h100"), 1, 1, "bf16", "bf16",
                  "bf16", "nccl", False)
    padded = StepModel(srv, 8192, 256, 4096, graph_align=8, graph_max=160)
    plain = copy.copy(padded)
    plain.graph_align, plain.graph_max = 0, 0
    graphs = copy.copy(padded)
    graphs.graph_max = 0
    issue = 356 * 22.1e-6
    assert padded.forward_ops == 356 and padded.eager_op_s == pytest.approx(22.1e-6)
    for b, kv in ((157, 100), (160, 3000)):                   # graphs of 160: as before
        assert padded.decode_step_s(b, b * kv) == graphs.decode_step_s(b, b * kv)
    for b, kv in ((161, 10), (161, 3000), (250, 2000)):      # eager, unpadded
        gpu = plain.decode_step_s(b, b * kv)
        assert padded.decode_step_s(b, b * kv) == pytest.approx(max(gpu, issue), rel=1e-12)
    assert padded.decode_step_s(161, 161 * 10) == pytest.approx(issue)   # host-bound here
    odd = copy.copy(padded)
    odd.graph_max = 150                        # 150 pads to 152 > 150: no graph holds it
    assert odd.past_graphs(150) and not odd.past_graphs(144)


def test_the_largest_graph_refuses_what_is_not_a_count():
    for bad in (-1, 2.5, "160"):
        with pytest.raises(ConfigError, match="--cuda-graph-max-bs"):
            ServeSettings(cuda_graph_max_bs=bad)
    assert ServeSettings(cuda_graph_max_bs=0).cuda_graph_max_bs == 0


TABLES = ("t_table", "x_table", "b_table", "e_table", "o_table", "r_table")


@pytest.mark.parametrize("pp, seqs", [(2, 256), (4, 64), (1, 32)])
def test_tables_shared_with_another_depth_or_seqs_equal_fresh_ones(pp, seqs):
    """StepModel.like: tables of one split reused at another pp (the stage transfers priced
    again) or max_num_seqs (the decode table and k) are the tables built afresh, to the bit."""
    m, topo = load_model("llama3-8b"), load_topology("dgx-h100")
    make = lambda p: _Server(m, topo, 2, p, "bf16", "bf16", "bf16", "nccl", False)  # noqa: E731
    base = StepModel(make(1), 2048, 64, 3000, 8)
    shared, fresh = base.like(make(pp), 2048, seqs, 3000, 8), StepModel(make(pp), 2048, seqs,
                                                                         3000, 8)
    assert shared is not None and shared.srv.pp == pp and shared.max_seqs == seqs
    for name in TABLES[:5] + TABLES[5:] * (pp > 1):
        for a, b in zip(getattr(shared, name).full(), getattr(fresh, name).full()):
            assert np.array_equal(a, b), name
    assert (shared.r_table is None) == (fresh.r_table is None) == (pp == 1)
    assert (shared.k, shared.split, shared.prices) == (fresh.k, fresh.split, fresh.prices)
    assert base.like(make(pp), 4096, seqs, 3000, 8) is None       # another token budget


def test_tables_are_not_shared_across_nodes():
    """A TP group spanning two nodes: its placement reads the job's size (the NICs shared),
    so no sharing."""
    m, topo = load_model("llama3-70b"), load_topology("dgx-h100-ndr-cluster")
    make = lambda p: _Server(m, topo, 16, p, "bf16", "bf16", "bf16", "nccl", False)  # noqa: E731
    assert StepModel(make(1), 512, 8, 600).like(make(2), 512, 8, 600) is None
