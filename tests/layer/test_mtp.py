"""The multi-token-prediction module's own ops (Megatron-core's MultiTokenPredictionLayer):
eh_proj's three GEMMs of 2 b s (2h) (h/tp) FLOPs, its 2h-wide collectives, the TP gather of its
output, what it keeps; one rank: no collective, no gather or split copy."""
from __future__ import annotations

import pytest

from tpsim.layer.dims import layer_dims
from tpsim.layer.mtp import mtp_template
from tpsim.sim.price import Pricing
from tpsim.sim.simulate import simulate
from tpsim.spec.model import load_model
from tpsim.spec.parallel import Parallelism
from tpsim.cluster.topology import load_topology


def _sim(tp: int, sp: bool, b: int = 2, s: int = 1024):
    m = load_model("gpt3-1.3b")
    d = layer_dims(m, tp, b, s, "bf16", sp, training=True)
    return simulate(mtp_template(tp > 1, sp), d, Pricing(load_topology("dgx-h100"),
                                                          Parallelism(tp=tp))), m, d


@pytest.mark.parametrize("tp, sp", [(1, False), (4, False), (4, True)])
def test_eh_proj_flops_closed_form(tp, sp):
    """Forward, dgrad and wgrad: 3 x 2 (b s) (2h) (h / tp) FLOPs, the module's only FLOPs."""
    sim, m, d = _sim(tp, sp)
    h = m.hidden
    rows = sim.op_rows()
    assert sum(r.flops for r in rows) == 3 * 2 * d.T * 2 * h * (h // tp)
    assert [r.name for r in rows if r.kind == "gemm"] == \
        ["fwd.eh_proj", "bwd.eh_proj.dgrad", "bwd.eh_proj.wgrad"]


def test_collectives_are_the_2h_input_and_the_h_output():
    """SP: the 2h-wide input all-gathered (forward, and again for wgrad), the 2h-wide input
    gradient reduce-scattered, the h/tp outputs all-gathered over TP, the gradient's SP
    all-gather; without SP the input gradient all-reduced; one rank: none."""
    sim, m, d = _sim(4, True)
    full = d.T * m.hidden * 2
    comm = {r.name: r.comm_bytes for r in sim.op_rows() if r.kind == "collective"}
    assert comm == {"fwd.eh_proj.all-gather": 2 * full, "fwd.mtp.gather": full,
                    "bwd.mtp.scatter": full, "bwd.eh_proj.all-gather": 2 * full,
                    "bwd.eh_proj.reduce-scatter": 2 * full}
    sim, m, d = _sim(4, False)
    comm = {r.name: r.comm_bytes for r in sim.op_rows() if r.kind == "collective"}
    assert comm == {"fwd.mtp.gather": full, "bwd.eh_proj.all-reduce": 2 * full}
    sim, _, _ = _sim(1, False)
    names = {r.name for r in sim.op_rows()}
    assert not {r.kind for r in sim.op_rows()} & {"collective"}
    assert not names & {"fwd.mtp.gather.cat", "bwd.mtp.split"}


@pytest.mark.parametrize("tp, sp", [(1, False), (4, False), (4, True)])
def test_kept_for_backward(tp, sp):
    """The two norms keep their Tn x h inputs, eh_proj its Tn x 2h input (bf16)."""
    sim, m, d = _sim(tp, sp)
    assert mtp_template(tp > 1, sp).saved_bytes(d) == d.Tn * 4 * m.hidden * 2
