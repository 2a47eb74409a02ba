"""MLA's rope and concatenations in eager PyTorch (tpsim.layer.mla_eager, NeMo AutoModel's
DeepSeek-V3): the bytes its docstring counts, the recomputation re-running the forward's, and
nothing moved for a model without MLA."""
from __future__ import annotations

import pytest

from tpsim.training.predict import predict

B, F = 2, 4   # bf16 activations, fp32
T, H, DN, DR, DV, RKV = 4096, 128, 128, 64, 128, 512   # DeepSeek-V3, TP 1, micro-batch 1


def ops(**kw):
    p = predict("deepseek-v3", "dgx-h100-ndr-cluster", nodes=1, tp=1, dp=8, micro_batch=1,
                seq_len=T, recompute="full", **kw)
    return p, {o.name: o for o in p.ops}


def total(rows, phase):
    return sum(o.bytes for name, o in rows.items()
               if name.startswith(f"{phase}.mla.") and name != "bwd.mla.add")


def test_bytes_per_layer():
    """Forward: rope on T x H d_r and T x d_r (2B + 4F an element in 3 kernels each), the q
    and k concatenations and v's copy (read and write); the recomputation the same; backward:
    rope's, the heads' sum of dk_pe, split's concatenations of dq, dk_nope and dv, and of
    kv_down's output gradient."""
    _, e = ops(mla_eager=True)
    rope = (2 * B + 4 * F) * T * (H * DR + DR)
    fwd = rope + 2 * B * T * H * (2 * (DN + DR) + DV)
    bwd = rope + B * T * DR * (H + 1) + 2 * B * T * (H * (DN + DR) + H * (DN + DV) + RKV + DR)
    assert total(e, "fwd") == fwd
    assert total(e, "rcp") == fwd
    assert total(e, "bwd") == bwd
    assert 5.1e9 < fwd * 2 + bwd < 5.2e9


def test_off_by_default_and_slower_on():
    base, plain = ops()
    eager, _ = ops(mla_eager=True)
    assert total(plain, "fwd") == total(plain, "bwd") == 0
    assert eager.layer.total_s > base.layer.total_s


def test_no_mla_no_change():
    kw = dict(tp=1, dp=8, seq_len=2048, attention="flash2")
    a = predict("llama3-8b", "dgx-h100-ndr-cluster", nodes=1, **kw)
    b = predict("llama3-8b", "dgx-h100-ndr-cluster", nodes=1, mla_eager=True, **kw)
    assert b.step.time_s == pytest.approx(a.step.time_s, rel=0, abs=0)


@pytest.mark.parametrize("argv", [
    ["predict", "--model", "llama3-8b", "--tp", "2", "--mla-eager"],
    ["predict", "--model", "gpt3-125m,llama3-8b", "--tp", "2", "--mla-eager"],
    ["search", "--model", "llama3-8b", "--gpus", "8", "--global-batch", "8", "--mla-eager"],
])
def test_mla_eager_given_on_a_model_without_mla_is_refused(argv, capsys):
    """A newcomer's --mla-eager on Llama priced exactly as without it, and said nothing; now
    one line naming the flag and what it needs, exit 2."""
    from tpsim.cli import main
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--mla-eager: expected a model with multi-head latent attention" in err


def test_the_presets_mla_eager_is_ignored_without_mla_and_search_refuses_a_given_one():
    """--framework automodel sets it for every model: on a model without MLA it is ignored,
    also given beside it as the preset's value (as a search prints its best layout's predict
    line); one given in search(fixed=) without the preset is refused."""
    from tpsim.base.errors import TpsimError
    from tpsim.cli import main
    from tpsim.search.driver import search
    run = ["predict", "--model", "gpt3-125m", "--tp", "1", "--dp", "8", "--zero", "3",
           "--framework", "automodel"]
    assert main(run) == 0
    assert main(run + ["--mla-eager"]) == 0    # a search's predict line spells the preset out
    with pytest.raises(TpsimError, match="^--mla-eager: expected a model with multi-head"):
        search("gpt3-125m", "dgx-a100", 8, 8, fixed={"mla_eager": True})
