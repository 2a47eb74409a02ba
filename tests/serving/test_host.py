import numpy as np
import pytest

from tpsim.report.serve import serve_report
from tpsim.serving.engine import serve
from tpsim.cluster.topology import load_topology
from tpsim.serving.host import host_step_s, step_wall_s
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
