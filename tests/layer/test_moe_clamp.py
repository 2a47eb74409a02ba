"""gpt-oss's clamped expert GLU inputs (tpsim.layer.moe_clamp): the eager kernels' bytes, the
host's wait before the activation, and their re-run under moe_act recomputation."""
from __future__ import annotations

import dataclasses

from tpsim.spec.model import load_model
from tpsim.training.predict import predict

B = 2   # bf16 activations


def run(model, **kw):
    return predict(model, "dgx-h100", tp=1, dp=8, ep=8, seq_len=4096, dtype="bf16", **kw)


def syncs(p) -> set:
    names = p.run.template.names
    return {(names[a], names[b]) for a, b in p.run.template.syncs}


def test_clamp_bytes_and_sync():
    """Forward: B + B + 2B per element of the R x 2 f_e fc1 output (R = 4096 x 4 rows at EP 8
    with every rank's share even, f_e 2880); backward, per element of a half, 3B + 2 (fill, le,
    where), 4B + 6 (fill, ge, le, logical_and_, where) and 4B (the cat), 3, 5 and 1 kernels;
    the activation waits on the host for the cat's end."""
    p = run("gpt-oss-120b")
    rows = {o.name: o for o in p.ops}
    n = 4096 * 4 * 2 * 2880
    assert [rows[f"fwd.experts.act.{k}"].bytes for k in ("clamp_glu", "clamp_linear", "cat")] \
        == [B * n, B * n, 2 * B * n]
    bwd = [rows[f"bwd.experts.act.{k}"] for k in ("clamp_glu", "clamp_linear", "split")]
    assert [o.bytes for o in bwd] == [(3 * B + 2) * n // 2, (4 * B + 6) * n // 2, 4 * B * n // 2]
    ops = dict(zip(p.run.template.names, p.run.ops))
    assert [ops[o.name].kernels for o in bwd] == [3, 5, 1]
    assert ("fwd.experts.act.cat", "fwd.experts.act") in syncs(p)
    assert rows["fwd.experts.act"].start_s >= rows["fwd.experts.act.cat"].end_s


def test_moe_act_recompute_reruns_the_clamps_and_their_sync():
    p = run("gpt-oss-120b", recompute="selective", recompute_modules=("moe_act",))
    names = p.run.template.names
    assert {"rcp.experts.act.clamp_glu", "rcp.experts.act.cat", "rcp.experts.act"} <= set(names)
    assert ("rcp.experts.act.cat", "rcp.experts.act") in syncs(p)


def test_no_clamp_without_the_limit_and_it_costs_time():
    plain = dataclasses.replace(load_model("gpt-oss-120b"), activation_clamp=None)
    q = run(plain)
    assert not any(".act.clamp" in n for n in q.run.template.names)
    assert run("gpt-oss-120b").layer.total_s > q.layer.total_s
