"""Speculative decoding in the engine loop (tpsim.serving.spec_engine): the acceptance draw's
distribution, a -> 1 emitting k + 1 tokens a step, tokens conserved, determinism by seed,
more acceptance never slower, the table against the direct price, and the refusals."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tpsim.cli import main
from tpsim.serving.engine import engine_parts, serve
from tpsim.serving.spec_engine import SpecDecode
from tpsim.serving.speculative import spec_step_s
from tpsim.spec.model import load_model
from tpsim.spec.serve import ServeSettings
from tpsim.spec.serving import ServingLayout
from tpsim.cluster.topology import load_topology

RUN = dict(tp=2, prompt=256, gen=64, requests=24, rate=8.0, seed=5)
EAGLE = dict(speculative="eagle", num_speculative_tokens=3)


def _spec(k=3, a=0.6, seed=0):
    m, topo = load_model("llama3-8b"), load_topology("dgx-h100")
    lay, st_ = ServingLayout(tp=2), ServeSettings(max_num_seqs=16)
    _, sm = engine_parts(m, topo, lay, st_, 2048)
    return SpecDecode(sm, None, "eagle", k, a, seed), sm


def test_accepted_drafts_are_truncated_geometric():
    """P(j) = a^j (1 - a) for j < k, a^k at j = k: the sample's frequencies within 4 sigma."""
    spec, _ = _spec(k=3, a=0.6)
    j = spec.accepted(200_000)
    for i in range(4):
        p = 0.6 ** i * (0.4 if i < 3 else 1.0)
        sigma = math.sqrt(p * (1 - p) / j.size)
        assert abs(np.mean(j == i) - p) < 4 * sigma


def test_table_matches_the_direct_price():
    """A decode-only step of b sequences at cache length L: the table's S(b) + s b L equals
    the draft's k forwards + the verification priced directly (one kind of layer: affine)."""
    spec, _ = _spec()
    srv = spec.sm.srv
    for b, n in ((1, 700), (4, 1500), (16, 3000)):
        direct = spec_step_s(srv, None, "eagle", 3, b, n)
        assert spec.step_s(b, b * n) == pytest.approx(direct, rel=2e-3)


def test_acceptance_near_one_takes_k_plus_one_tokens_a_step():
    """One request alone: its gen - 1 decoded tokens take ceil((gen - 1) / (k + 1)) steps."""
    one = dict(RUN, requests=1, gen=129)
    p = serve("llama3-8b", acceptance_rate=0.999999, **EAGLE, **one)
    plain = serve("llama3-8b", **one)
    decodes = p.scheduler.steps - p.scheduler.prefill_steps
    assert decodes == math.ceil(128 / 4)
    assert plain.scheduler.steps - plain.scheduler.prefill_steps == 128
    assert p.latency.itl_s.mean > p.latency.tpot_s.mean     # one gap per step of 4 tokens


@pytest.mark.parametrize("a", [0.0, 0.5, 0.9])
def test_every_request_gets_exactly_its_tokens(a):
    p = serve("llama3-8b", acceptance_rate=a, **EAGLE, **RUN)
    plain = serve("llama3-8b", **RUN)
    assert np.array_equal(p.generated, plain.generated)
    assert p.inputs.output_tokens == int(p.generated.sum())


def test_the_draft_shrinks_the_kv_cache():
    p = serve("llama3-8b", acceptance_rate=0.5, **EAGLE, **RUN)
    assert p.engine.num_gpu_blocks < serve("llama3-8b", **RUN).engine.num_gpu_blocks


def test_deterministic_by_seed():
    one = serve("llama3-8b", acceptance_rate=0.6, **EAGLE, **RUN)
    two = serve("llama3-8b", acceptance_rate=0.6, **EAGLE, **RUN)
    other = serve("llama3-8b", acceptance_rate=0.6, **EAGLE, **dict(RUN, seed=6))
    assert one.latency == two.latency and np.array_equal(one.e2e, two.e2e)
    assert other.latency != one.latency


@settings(max_examples=6, deadline=None)
@given(a=st.floats(0.0, 0.9), more=st.floats(0.02, 0.09), k=st.integers(1, 4))
def test_more_acceptance_never_raises_mean_tpot(a, more, k):
    kw = dict(RUN, requests=12, speculative="eagle", num_speculative_tokens=k)
    low = serve("llama3-8b", acceptance_rate=a, **kw).latency.tpot_s.mean
    high = serve("llama3-8b", acceptance_rate=a + more, **kw).latency.tpot_s.mean
    assert high <= low * (1 + 1e-12)


@pytest.mark.parametrize("argv, flag", [
    (["--pp", "2"], "--pp"),
    (["--num-scheduler-steps", "4"], "--num-scheduler-steps"),
    (["--admission", "sglang-0.4"], "--admission"),
])
def test_unmodelled_drafts_are_refused_in_one_line(argv, flag, capsys):
    assert main(["serve", "--model", "llama3-8b", "--tp", "2", "--requests", "4",
                 "--speculative", "eagle", "--num-speculative-tokens", "2",
                 "--acceptance-rate", "0.5", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err and "Traceback" not in err
