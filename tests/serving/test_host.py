import numpy as np
import pytest

from tpsim.report.serve import serve_report
from tpsim.serving.engine import serve
from tpsim.cluster.topology import load_topology
from tpsim.serving.arrivals import Requests
from tpsim.serving.engine import EngineLoop, engine_parts
from tpsim.serving.host import horizon_s, host_step_s, step_wall_s, steps_until_seen
from tpsim.spec.model import load_model
from tpsim.spec.serve import split_settings
from tpsim.spec.serve import ServeSettings

RUN = dict(requests=40, prompt=256, gen=32, rate=float("inf"))


def test_host_time_is_affine_in_the_sequences_and_adds_or_overlaps():
    st = ServeSettings(host_step_us=500.0, host_seq_us=10.0)
    assert host_step_s(st, np.array([0, 100])) == pytest.approx([500e-6, 1500e-6])
    gpu, host = np.array([1e-3, 2e-3]), np.array([1.5e-3, 1.5e-3])
    assert step_wall_s(gpu, host, False) == pytest.approx([2.5e-3, 3.5e-3])
    assert step_wall_s(gpu, host, True) == pytest.approx([1.5e-3, 2e-3])


def test_a_constant_host_time_between_steps_adds_it_to_every_step():
    """Every request queued at once: the schedule does not depend on time, so a host time of
    a per step (b = 0) lengthens the run by exactly steps x a."""
    none = serve("llama3-8b", "dgx-h100", host_step_us=0.0, host_seq_us=0.0, **RUN)
    some = serve("llama3-8b", "dgx-h100", host_step_us=700.0, host_seq_us=0.0, **RUN)
    assert some.scheduler.steps == none.scheduler.steps
    added = some.throughput.duration_s - none.throughput.duration_s
    assert added == pytest.approx(none.scheduler.steps * 700e-6, rel=1e-9)
    assert some.scheduler.host_wait_s == pytest.approx(added, rel=1e-9)
    assert some.energy.decode_busy_s == pytest.approx(none.energy.decode_busy_s, rel=1e-12)


def test_overlapped_host_work_shorter_than_the_forward_costs_nothing():
    none = serve("llama3-8b", "dgx-h100", host_step_us=0.0, host_seq_us=0.0, **RUN)
    hid = serve("llama3-8b", "dgx-h100", host_step_us=100.0, host_seq_us=1.0,
                host_overlap=True, **RUN)
    assert hid.throughput.duration_s == pytest.approx(none.throughput.duration_s, rel=1e-12)
    assert hid.scheduler.host_wait_s == 0.0


def test_eager_prefill_steps_wait_for_the_host_and_decode_steps_do_not():
    """--eager-prefill: the topology's engine_dispatch_us per op, on steps with prefill only;
    nothing more where --eager already prices every op's issue."""
    base = dict(host_step_us=0.0, host_seq_us=0.0, **RUN)
    graphs = serve("llama3-8b", "dgx-h100", **base)
    eager = serve("llama3-8b", "dgx-h100", eager_prefill=True, **base)
    assert eager.energy.decode_busy_s == pytest.approx(graphs.energy.decode_busy_s, rel=1e-12)
    assert eager.inputs.eager_prefill and not graphs.inputs.eager_prefill   # said in the header
    assert "CUDA graphs, eager prefill" in serve_report(eager).splitlines()[0]
    assert serve_report(graphs).splitlines()[0].endswith("; CUDA graphs")
    assert eager.energy.prefill_busy_s >= graphs.energy.prefill_busy_s
    c = load_topology("dgx-h100").device.engine_dispatch_s
    assert c == pytest.approx(22.1e-6)
    one = dict(base, requests=1, prompt=1, gen=2, tp=1)
    tiny = serve("llama3-8b", "dgx-h100", eager_prefill=True, **one)
    assert tiny.energy.prefill_busy_s == pytest.approx(356 * c, rel=1e-12)   # host-bound
    all_eager = serve("llama3-8b", "dgx-h100", eager=True, eager_prefill=True, **one)
    assert all_eager.energy.prefill_busy_s == pytest.approx(
        serve("llama3-8b", "dgx-h100", eager=True, **one).energy.prefill_busy_s, rel=1e-12)


def test_the_overlap_scheduler_sees_arrivals_as_the_last_step_started():
    """horizon_s: t - w under the overlap scheduler while busy, t otherwise; steps_until_seen
    counts the steps until a step boundary (plain) or a step start (overlap) passes the
    arrival: steps ending at 1, 2, 3 from t = 0, an arrival at 1.5 -> 2 plain, 3 overlapped;
    at 0.5 (inside the step in flight) -> 1 and 2."""
    assert horizon_s(10.0, 2.0, True, True) == 8.0
    assert horizon_s(10.0, 2.0, False, True) == horizon_s(10.0, 2.0, True, False) == 10.0
    ends = np.array([1.0, 2.0, 3.0])
    assert [steps_until_seen(0.0, ends, a, False) for a in (0.5, 1.5)] == [1, 2]
    assert [steps_until_seen(0.0, ends, a, True) for a in (0.5, 1.5)] == [2, 3]


def test_an_arrival_under_the_overlap_scheduler_waits_one_more_decode_step():
    """One request alone from t = 0 (an idle engine schedules it at once, overlap or not) and
    a second arriving during its decode steps, no host or front-end time: with the overlap
    the second's prefill starts one decode step of the first later (SGLang's
    event_loop_overlap launched that step before seeing the arrival), and its TTFT is longer
    by that step, decode_step_s(1, its cache)."""
    kw = dict(host_step_us=0.0, host_seq_us=0.0, frontend_token_us=0.0,
              frontend_latency_us=0.0, separate_prefill=True)
    reqs = Requests(np.array([0.0, 0.3]), np.array([256, 256]), np.array([400, 2]))
    first = {}
    for overlap in (False, True):
        lay, st = split_settings(None, None, dict(tp=1, host_overlap=overlap, **kw))
        eng, sm = engine_parts(load_model("llama3-8b"), load_topology("dgx-h100"), lay, st,
                               700)
        loop = EngineLoop(reqs, st, eng.num_gpu_blocks, sm)
        loop.run()
        first[overlap] = loop.first - reqs.arrival_s
    assert first[True][0] == first[False][0]
    step = float(sm.decode_step_s(1, 256 + 0.3 / float(sm.decode_step_s(1, 300))))
    assert first[True][1] - first[False][1] == pytest.approx(step, rel=2e-3)
