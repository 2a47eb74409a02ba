"""The first answer's advice reads the layout: a knob already on, or one that cannot act (the
distributed optimizer with one DP replica), is never suggested."""
from __future__ import annotations

import tpsim
from tpsim.report.render import notice_text
from tpsim.report.summary import advice, prediction_summary


def _advice(**layout) -> str:
    p = tpsim.predict(layout.pop("model"), layout.pop("topology", "dgx-h100"), **layout)
    return "\n".join(advice(p)), p


def test_no_distributed_optimizer_advice_when_it_is_on_or_cannot_act():
    text, p = _advice(model="gpt3", tp=8, dp=2, global_batch=2, nodes=2,
                      topology="dgx-h100-ndr-cluster", distributed_optimizer=True)
    assert not p.memory.fits and "--distributed-optimizer" not in text
    assert "distributed optimizer" not in notice_text(p.warnings[0])
    text, p = _advice(model="gpt3", tp=8)                       # dp = 1: nothing to shard over
    assert not p.memory.fits and "--distributed-optimizer" not in text
    text, p = _advice(model="gpt3", tp=8, dp=2, global_batch=2, nodes=2,
                      topology="dgx-h100-ndr-cluster")
    assert "--distributed-optimizer" in text and "distributed optimizer" in notice_text(
        p.warnings[0])


def test_pipeline_advice_names_enough_stages():
    """--pp k from the advice splits the weights, gradients and optimizer state enough that
    they and the activations fit (1F1B keeps the activations in flight about the same)."""
    text, p = _advice(model="gpt3", tp=8)
    k = int(text.split("--pp ", 1)[1].split()[0])
    m = p.memory
    usable = m.capacity_bytes - m.reserved_bytes
    assert (m.weights_bytes + m.gradients_bytes + m.optimizer_bytes) / k + m.activations_bytes \
        <= usable
    assert (m.weights_bytes + m.gradients_bytes + m.optimizer_bytes) / (k // 2) + \
        m.activations_bytes > usable


def test_tp_overlap_advice_only_when_off():
    base = dict(model="llama3-8b", tp=2, dp=4, global_batch=128, sequence_parallel=True,
                distributed_optimizer=True)
    text, p = _advice(**base)
    assert p.memory.fits and "--tp-comm-overlap" in text
    text, _ = _advice(**base, tp_comm_overlap=True)
    assert "--tp-comm-overlap" not in text
    assert "FITS" in prediction_summary(p)


def test_search_advice_and_no_tp_overlap_for_a_mixture_of_experts():
    """The search prices MoE models (their EP enumerated); TP overlap is refused with
    experts, so it is never advised."""
    text, p = _advice(model="mixtral-8x7b", tp=8, sequence_parallel=True)
    assert p.inputs.experts == 8 and "tpsim search --model mixtral-8x7b" in text
    assert "--tp-comm-overlap" not in text
