"""The distributed optimizer's weight all-gather overlapped with the next step's first forwards
(Megatron-core's --overlap-param-gather) against the same step with the gather after the
optimizer."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.base.errors import ConfigError
from tpsim.base.schema import from_mapping
from tpsim.cluster.topology import load_topology
from tpsim.spec.layout import Layout
from tpsim.spec.model import ModelConfig
from tpsim.training import terms
from tpsim.training.grad_buckets import split_buckets
from tpsim.training.predict import predict
from tpsim.training.step import build_step, time_step

A100 = load_topology("dgx-a100-hdr-cluster")


def gpt(**kw) -> ModelConfig:
    data = {"name": "gpt-test", "layers": 12, "hidden": 2048, "heads": 16, "vocab": 50257,
            "seq_len": 1024, "dropout": 0.1, "bias": True, "tie_embeddings": True, **kw}
    return from_mapping(ModelConfig, data, "<test>")


def both(model, **kw):
    off = predict(model, A100, distributed_optimizer=True, **kw)
    on = predict(model, A100, distributed_optimizer=True, overlap_param_gather=True, **kw)
    return off, on


def test_it_needs_the_distributed_optimizer():
    with pytest.raises(ConfigError, match="--overlap-param-gather.*--distributed-optimizer"):
        Layout(overlap_param_gather=True, dp=2)
    assert Layout(overlap_param_gather=True, distributed_optimizer=True).overlap_param_gather


def test_the_release_is_the_last_bucket_the_forward_catches_up_with():
    """g = (3, 1, 1), f = (1, 1, 5): the buckets end at 3, 4, 5; bucket k's layers may start
    at G_k - (f_0 + ... + f_k-1) = 3, 3, 3: released at 3; f = (0.5, 0.5, 1): 3, 3.5, 4."""
    assert terms.gather_release(0.0, [(3, 1), (1, 1), (1, 5)]) == (3.0, 5.0)
    assert terms.gather_release(0.0, [(3, 0.5), (1, 0.5), (1, 1)]) == (4.0, 5.0)
    assert terms.gather_release(2.0, [(1, 9)]) == (3.0, 3.0)


def test_one_stage_hides_all_but_the_release():
    """pp = 1: the step without the overlap ends with the stage's whole all-gather G after the
    optimizer; with it, the forward of micro-batch 0 starts at the release R of its buckets
    (gather_release over the per-bucket all-gathers, by hand below) and runs its F seconds at
    1 - I beside the all-gathers until their end E, losing min(I (E - R), F I / (1 - I)); nothing
    else moves: T_on = T_off - G + R + that, exactly, and that is a saving (several buckets)."""
    model = gpt()
    off, on = both(model, tp=1, pp=1, dp=8, global_batch=16)
    setup, topo = on.step_run._setup, on.step_run._topo
    chunk = setup.chunks[0]
    runs = [c[0] for c in split_buckets(chunk.units, (), terms.bucket_size(8, 0))]
    assert len(runs) > 2
    group, price = terms.dp_group(setup.parallelism, 0), terms.collective_price(topo)
    buckets = [(terms.param_gather_s(sum(chunk.units[i][1] * k for i, k in b), "bf16", True,
                                     group, price), sum(chunk.forwards[i] * k for i, k in b))
               for b in reversed(runs)]
    release, end = terms.gather_release(0.0, buckets)
    whole = terms.param_gather_s(setup.stage_params[0], "bf16", True, group, price)
    i, forward = topo.device.comm_compute_interference, chunk.part.forward_s
    lost = min(i * (end - release), forward * i / (1 - i))
    assert 0 < release < whole and 0 < lost
    assert on.step.time_s == pytest.approx(off.step.time_s - whole + release + lost, rel=1e-12)
    assert on.step.dp_comm_exposed_s == pytest.approx(
        off.step.dp_comm_exposed_s - whole + release + lost, rel=1e-9)


@pytest.mark.parametrize("kw", [
    dict(tp=2, pp=4, dp=2, global_batch=16),
    dict(tp=2, pp=2, dp=4, global_batch=32, virtual_stages=3, sequence_parallel=True),
    dict(tp=1, pp=1, dp=8, global_batch=16),
    dict(tp=4, pp=3, dp=2, global_batch=12, overlap_grad_reduce=False),
])
def test_the_step_equals_its_graph(kw):
    """The one-pass timing and the op-by-op graph agree with the gathers and the waits."""
    _, on = both(gpt(), **kw)
    setup, topo = on.step_run._setup, on.step_run._topo
    g, run = time_step(setup, topo), build_step(setup, topo).run()
    assert g.makespan_s == pytest.approx(run.timeline.makespan_s, rel=1e-12)
    gathers = [n for n in run.template.nodes if n.name.endswith("param-all-gather")]
    assert gathers and all(".chunk" in n.name for n in gathers)
    assert on.step.time_s == g.makespan_s


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([1, 2, 4]), st.sampled_from([1, 2, 4]), st.sampled_from([2, 4, 8]),
       st.sampled_from([1, 2]), st.booleans(), st.sampled_from([1, 3]))
def test_never_slower_than_the_gather_after_the_optimizer(tp, pp, dp, m, sp, v):
    if v > 1 and pp == 1:
        v = 1
    mb = pp * m if v > 1 else m
    off, on = both(gpt(layers=12), tp=tp, pp=pp, dp=dp, global_batch=mb * dp,
                   sequence_parallel=sp and tp > 1, virtual_stages=v)
    assert on.step.time_s <= off.step.time_s * (1 + 1e-12)


@pytest.mark.parametrize("kw", [
    dict(tp=2, pp=4, dp=2, global_batch=64),
    dict(tp=2, pp=2, dp=4, global_batch=32, virtual_stages=3, sequence_parallel=True),
])
def test_the_waits_are_exposed_dp_on_every_stage(kw):
    """While stage 0's first forward waits for its buckets, every stage idles for the weight
    all-gather (exposed DP, not bubble): the sweep and the arrays split it alike, the parts
    still sum to the step, and a stage's exposed DP covers the wait."""
    from tpsim.training import step_idle
    _, on = both(gpt(), **kw)
    g = time_step(on.step_run._setup, on.step_run._topo)
    assert g.wait_ops and (0, 0) in g.waits
    assert step_idle._swept(g, kw["pp"]) == step_idle._arrays(g, kw["pp"])
    for s in on.step.stages:
        parts = (s.compute_s + s.tp_comm_exposed_s + s.host_wait_s + s.bubble_s
                 + s.pp_comm_exposed_s + s.dp_comm_exposed_s + s.optimizer_s)
        assert parts == pytest.approx(on.step.time_s, rel=1e-9)
        assert s.dp_comm_exposed_s >= g.waits[0, 0] * (1 - 1e-12)
