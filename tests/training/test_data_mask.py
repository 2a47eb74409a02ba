"""The data loader's attention mask (tpsim.training.data_mask, --create-attention-mask): its
closed form (b s^2 bytes over the host link, then a TP broadcast), where the step charges it
(the forward of the first and last stage of every micro-batch, once with one stage), and the
values refused."""
from __future__ import annotations

import pytest

import tpsim
from tpsim.base.errors import ConfigError, TpsimError
from tpsim.cluster.topology import load_topology
from tpsim.sim.price import group_collective
from tpsim.spec.layout import Layout
from tpsim.spec.parallel import Parallelism
from tpsim.training.data_mask import mask_bytes, mask_copy_s

KW = dict(seq_len=4096, global_batch=8, micro_batch=2)


def test_the_copy_is_b_s_squared_bytes_over_the_host_link_then_a_tp_broadcast():
    topo = load_topology("dgx-h100")
    tp4 = Parallelism(tp=4, dp=2).group("tp")
    h2d, bcast = mask_copy_s(2, 8192, tp4, topo)
    assert mask_bytes(2, 8192) == 2 * 8192 ** 2
    assert h2d == 2 * 8192 ** 2 / 64e9           # dgx-h100: PCIe Gen5 x16, 64 GB/s a direction
    assert bcast == group_collective("broadcast", 2 * 8192 ** 2, tp4, topo).time_s > 0
    assert mask_copy_s(2, 8192, Parallelism(tp=1, dp=8).group("tp"), topo) == (h2d, 0.0)


def test_one_stage_pays_it_once_a_micro_batch():
    """TP 4, one stage, one replica: the step longer by m (copy + broadcast) exactly, the copy
    as host wait and the broadcast as exposed TP."""
    topo = load_topology("dgx-h100")
    plain = tpsim.predict("gpt3-1.3b", topo, tp=4, **KW).step
    masked = tpsim.predict("gpt3-1.3b", topo, tp=4, create_attention_mask=True, **KW).step
    h2d, bcast = mask_copy_s(2, 4096, Parallelism(tp=4).group("tp"), topo)
    m = plain.micro_batches
    assert m == 4
    assert masked.time_s - plain.time_s == pytest.approx(m * (h2d + bcast), rel=1e-9)
    assert masked.host_wait_s - plain.host_wait_s == pytest.approx(m * h2d, rel=1e-9)


def test_the_first_and_last_stages_pay_it_the_middle_ones_not():
    """PP 4 (interleaved, 2 chunks): each micro-batch's forward on the first and the last stage
    is longer by the copy (TP 1: no broadcast); the middle stages' are unchanged."""
    kw = dict(tp=1, pp=4, virtual_stages=2, **KW)
    plain = tpsim.predict("gpt3-1.3b", "dgx-h100", **kw).step.stages
    masked = tpsim.predict("gpt3-1.3b", "dgx-h100", create_attention_mask=True, **kw).step.stages
    h2d = 2 * 4096 ** 2 / 64e9
    grown = [b.forward_s - a.forward_s for a, b in zip(plain, masked)]
    assert grown == pytest.approx([h2d, 0.0, 0.0, h2d], abs=1e-15)


def test_bad_values_and_an_unknown_host_link_are_refused():
    with pytest.raises(TpsimError, match="^--create-attention-mask"):
        Layout(create_attention_mask="yes")
    with pytest.raises(ConfigError, match="host_link_bandwidth_GBps"):
        tpsim.predict("gpt3-1.3b", "grand-teton-h100", tp=8, create_attention_mask=True, **KW)
