"""Expert parallelism in the training step (tpsim.layer.moe_ep, tpsim.spec.folding): the EP
all-to-alls in the step, expert weights over EP x ETP, expert optimizer state over expert DP,
and EP 1 unchanged."""
from __future__ import annotations

import subprocess
import sys

import pytest

import tpsim
from tpsim.base.errors import ConfigError
from tpsim.spec.model import load_model
from tpsim.spec.model_params import expert_params, moe_layer_params
from tpsim.training import terms
from tpsim.spec.folding import fold
from tpsim.spec.parallel import Parallelism

MIXTRAL = dict(tp=2, sequence_parallel=True, pp=4, dp=8, seq_len=4096, global_batch=256,
               distributed_optimizer=True, recompute="full")


@pytest.fixture(scope="module")
def mixtral_ep8():
    return tpsim.predict("mixtral-8x7b", "dgx-h100-ndr-cluster", ep=8, **MIXTRAL)


def test_mixtral_on_64_h100s_with_ep8_has_exposed_all_to_alls(mixtral_ep8):
    """Mixtral 8x7B, 64 H100s (TP 2 x PP 4 x DP 8), --ep 8: the MoE layer's collectives include
    all-to-alls on the ep group (dispatch and combine, forward, backward and, under --recompute
    full, the forward's again: 6; the dispatched probabilities' beside the dispatch: 3) and
    the gather of the E token counts (int64) before the dispatch (2: forward and recompute),
    and some of their time is exposed, within the exposed TP."""
    p = mixtral_ep8
    rows = [c for c in p.collectives if c.group == "ep"]
    assert rows and {c.op for c in rows} == {"all-to-all", "all-gather"}
    assert sum(c.count for c in rows if c.op == "all-to-all") == 6 + 3
    gathers = [c for c in rows if c.op == "all-gather"]
    assert sum(c.count for c in gathers) == 2 and {c.bytes for c in gathers} == {8 * 8 * 8}
    st = p.step
    assert 0 < st.ep_comm_exposed_s <= st.tp_comm_exposed_s
    # ep 8 with expert TP 2 (= tp): ranks 0, 2, ..., 14 of a stage, two DGX nodes
    assert (p.inputs.ep, p.inputs.expert_tp, p.inputs.expert_dp, p.inputs.ep_nodes) == \
        (8, 2, 1, 2)
    assert tpsim.predict("mixtral-8x7b", "dgx-h100-ndr-cluster", **MIXTRAL).step \
        .ep_comm_exposed_s == 0


def test_expert_weights_split_over_ep_and_etp(mixtral_ep8):
    """A middle stage holds 8 layers; --ep 8 keeps 1 of the 8 experts per layer (each 1/etp
    = 1/2 wide, etp defaulting to tp): params fall by 8 x 7/8 x E (n_in + 1) h f_e / 2."""
    m = load_model("mixtral-8x7b")
    base = tpsim.predict("mixtral-8x7b", "dgx-h100-ndr-cluster", **MIXTRAL)
    one = 3 * m.hidden * m.expert_ffn_hidden // 2
    assert base.stage_memory[1].params_per_gpu - mixtral_ep8.stage_memory[1].params_per_gpu \
        == 8 * 7 * one
    assert moe_layer_params(m, 2, 8, 2) - moe_layer_params(m, 2) == -7 * one
    assert expert_params(m, 8, 2) == one


def test_expert_optimizer_state_shards_over_expert_dp():
    """tp 2 x dp 8 folded as etp 1 x ep 4 x edp 4: the distributed optimizer splits the dense
    params 8 ways and the experts' 4 ways: shares = n / ((n - X)/8 + X/4)."""
    m = load_model("mixtral-8x7b")
    f = fold(Parallelism(tp=2, dp=8), 4, 1, 8)
    n, x = 10**9, 2 * expert_params(m, 4, 1)
    assert terms.optimizer_shares(m, 2, 8, n, 2, f, True) == pytest.approx(
        n / ((n - x) / 8 + x / 4))
    assert terms.optimizer_shares(m, 2, 8, n, 2, f, False) == 1


def test_ep1_with_expert_tp_equal_to_tp_is_the_all_gather_slot():
    """--ep 1 --expert-tp = tp is the default: the same prediction, to the bit."""
    kw = dict(tp=2, sequence_parallel=True, dp=4, seq_len=2048)
    a = tpsim.predict("mixtral-8x7b", "dgx-h100", **kw)
    b = tpsim.predict("mixtral-8x7b", "dgx-h100", ep=1, expert_tp=2, **kw)
    assert a.step == b.step and a.memory == b.memory


@pytest.mark.parametrize("kw, flag", [
    (dict(model="gpt3", ep=2), "--ep"),
    (dict(ep=3), "--ep"),
    (dict(ep=8, expert_tp=2, dp=2), "--ep"),
    (dict(expert_tp=3), "--expert-tp"),
])
def test_bad_expert_layouts_name_their_flag(kw, flag):
    kw = {"model": "mixtral-8x7b", "tp": 2, "sequence_parallel": True, "dp": 4,
          "seq_len": 1024, **kw}
    with pytest.raises(ConfigError, match=flag):
        tpsim.predict(kw.pop("model"), "dgx-h100", **kw)


def test_cli_refuses_a_bad_ep_in_one_line():
    r = subprocess.run([sys.executable, "-m", "tpsim", "predict", "--model", "mixtral-8x7b",
                        "--tp", "2", "--sequence-parallel", "--dp", "4", "--ep", "3"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "--ep" in r.stderr


def test_a_bucket_reduces_dense_grads_over_dp_and_expert_grads_over_expert_dp():
    """Megatron-core's separate expert buffers: a bucket of P parameters, X of them routed
    experts', runs collective(P - X) on DP then collective(X) on expert DP; no expert
    collective when expert DP is one rank; the dense-only bucket as before."""
    calls = []

    def collective(n, group):
        calls.append((n, group.name))
        return 1.0
    f = fold(Parallelism(tp=1, dp=8), 4, 1, 8)
    dp, edp = f.group("dp"), f.group("edp")
    assert terms.dp_and_expert_s(collective, 100, 60, dp, edp) == 2.0
    assert calls == [(40, "dp"), (60, "edp")]
    calls.clear()
    one = fold(Parallelism(tp=1, dp=8), 8, 1, 8)
    assert terms.dp_and_expert_s(collective, 100, 60, dp, one.group("edp")) == 1.0
    assert calls == [(40, "dp")]
    calls.clear()
    assert terms.dp_and_expert_s(collective, 100, 0, dp, None) == 1.0 and calls == [(100, "dp")]


def test_expert_units_only_when_folded():
    m = load_model("mixtral-8x7b")
    assert terms.expert_unit_params(m, None) == 0
    assert terms.expert_unit_params(m, fold(Parallelism(tp=2, dp=4), 1, 2, 8)) == 0
    assert terms.expert_unit_params(m, fold(Parallelism(tp=2, dp=4), 4, 1, 8)) == \
        expert_params(m, 4, 1)
