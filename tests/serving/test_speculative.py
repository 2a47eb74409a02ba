"""Speculative decoding (tpsim.serving.speculative): the expected tokens per step in closed
form, k = 0 equal to plain decode, a draft that is never accepted costs more than none, more
acceptance never slower, and the command line's refusals."""
import math

import pytest
from hypothesis import given, settings, strategies as st

from tpsim.cli import main
from tpsim.serving.infer import _Server, decode_steps, infer
from tpsim.serving.speculative import expected_tokens, speculative_steps
from tpsim.spec.model import load_model
from tpsim.cluster.topology import load_topology

SMALL = dict(tp=2, batch=4, prompt=512, gen=64)


@pytest.mark.parametrize("a, k, tokens", [(0.9, 1, 1.9), (0.8, 3, 1 + 0.8 + 0.64 + 0.512),
                                          (0.0, 4, 1.0), (0.5, 0, 1.0)])
def test_expected_tokens_closed_form(a, k, tokens):
    """Leviathan et al. 2023, eq. 1: (1 - a^(k+1)) / (1 - a); by hand 1 + a + ... + a^k."""
    assert expected_tokens(a, k) == pytest.approx(tokens, rel=1e-12)
    assert expected_tokens(a, k) == pytest.approx((1 - a ** (k + 1)) / (1 - a), rel=1e-12)


def test_k_zero_is_plain_decode():
    """No draft forward and one token per step: a step is the plain decode step, so the time
    per token equals decode_steps' (the same mean over the cache lengths)."""
    m, topo = load_model("llama3-8b"), load_topology("dgx-h100")
    srv = _Server(m, topo, 2, 1, "bf16", "bf16", "bf16", "nccl", False)
    plain, _ = decode_steps(srv, 4, 512, 64)
    dec, spec = speculative_steps(srv, None, "eagle", 0, 0.7, 4, 512, 64, plain)
    assert dec.time_per_token_s == pytest.approx(plain.time_per_token_s, rel=1e-12)
    assert spec.draft_s == 0 and spec.tokens_per_step == 1
    assert spec.speedup == pytest.approx(1.0, rel=1e-12)


def test_no_draft_keeps_the_plain_numbers():
    p = infer("llama3-8b", "dgx-h100", **SMALL)
    assert p.speculative is None and p.inputs.num_speculative_tokens == 0


def test_a_draft_never_accepted_costs_more_than_none():
    """a = 0: one token per step, as without a draft, but k draft forwards and a wider
    verification on top."""
    plain = infer("llama3-8b", "dgx-h100", **SMALL)
    p = infer("llama3-8b", "dgx-h100", speculative="eagle", num_speculative_tokens=2,
              acceptance_rate=0.0, **SMALL)
    assert p.decode.time_per_token_s > plain.decode.time_per_token_s
    assert p.speculative.speedup < 1


def test_step_is_draft_plus_verify():
    """The step is affine in the cache length here (one kind of layer, no window): its mean
    over an odd count of lengths is its value at the middle one, draft + verify."""
    p = infer("llama3-8b", "dgx-h100", speculative="eagle", num_speculative_tokens=3,
              acceptance_rate=0.6, **SMALL)
    s = p.speculative
    assert s.step_s == pytest.approx(s.draft_s + s.verify_s, rel=1e-9)
    assert s.time_per_token_s == pytest.approx(s.step_s / s.tokens_per_step, rel=1e-12)
    assert s.draft_share == pytest.approx(s.draft_s / s.step_s, rel=1e-9)


@settings(max_examples=8, deadline=None)
@given(a=st.floats(0.0, 0.98), b=st.floats(0.0, 0.98), k=st.integers(1, 4),
       batch=st.sampled_from([1, 8, 32]))
def test_more_acceptance_is_never_slower(a, b, k, batch):
    """The step does not depend on a; E grows with a: the time per token never grows."""
    lo, hi = sorted((a, b))
    run = lambda x: infer("llama3-8b", "dgx-h100", tp=2, batch=batch, prompt=256, gen=32,  # noqa: E731
                          draft_model="llama2-7b", num_speculative_tokens=k,
                          acceptance_rate=x).speculative
    slow, fast = run(lo), run(hi)
    assert fast.time_per_token_s <= slow.time_per_token_s * (1 + 1e-12)
    assert 1 <= fast.tokens_per_step <= k + 1


@pytest.mark.parametrize("argv, flag", [
    (["--speculative", "mtp", "--num-speculative-tokens", "1"], "--speculative"),
    (["--speculative", "eagle", "--num-speculative-tokens", "2"], "--acceptance-rate"),
    (["--speculative", "eagle", "--acceptance-rate", "0.5"], "--num-speculative-tokens"),
    (["--num-speculative-tokens", "2"], "--num-speculative-tokens"),
    (["--speculative", "eagle", "--num-speculative-tokens", "0"], "--num-speculative-tokens"),
    (["--speculative", "eagle", "--num-speculative-tokens", "1", "--acceptance-rate", "1"],
     "--acceptance-rate"),
    (["--draft-model", "nope", "--num-speculative-tokens", "1", "--acceptance-rate", "0.5"],
     "--draft-model"),
    (["--speculative", "eagle", "--draft-model", "llama2-7b", "--num-speculative-tokens", "1",
      "--acceptance-rate", "0.5"], "--draft-model"),
])
def test_bad_speculative_input_is_refused_in_one_line(argv, flag, capsys):
    assert main(["infer", "--model", "llama3-8b", "--tp", "2", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err and "Traceback" not in err


def test_mtp_on_deepseek_defaults_to_the_reported_acceptance():
    """DeepSeek-V3 report: 85-90% second-token acceptance; the default is its low end."""
    p = infer("deepseek-v3", "dgx-h200", tp=8, batch=1, prompt=256, gen=32, dtype="fp8",
              speculative="mtp", num_speculative_tokens=1)
    assert p.speculative.acceptance_rate == 0.85
    assert p.speculative.tokens_per_step == pytest.approx(1.85, rel=1e-12)
    assert math.isclose(p.inputs.acceptance_rate, 0.85)


def test_mtp_memory_is_one_more_layer():
    """DeepSeek-V3's MTP module caches one more layer's latent, (512 + 64) x 1 byte in fp8,
    and holds one more MoE layer plus eh_proj (2 x 7168 x 7168 fp8 bytes, whole per rank)."""
    kw = dict(tp=8, batch=1, prompt=256, gen=32, dtype="fp8")
    plain = infer("deepseek-v3", "dgx-h200", **kw).memory
    mtp = infer("deepseek-v3", "dgx-h200", speculative="mtp", num_speculative_tokens=1,
                **kw).memory
    assert mtp.kv_bytes_per_token - plain.kv_bytes_per_token == 576
    assert mtp.weights_bytes - plain.weights_bytes > 2 * 7168 * 7168
    assert mtp.max_batch < plain.max_batch


def test_steady_serve_refuses_a_draft():
    """tpsim serve runs a draft (tests/serving/test_spec_engine.py); the steady-state closed
    loop does not model one."""
    from tpsim.serving.steady import serve_steady
    from tpsim.base.errors import ConfigError
    with pytest.raises(ConfigError, match="--num-speculative-tokens"):
        serve_steady("llama3-8b", tp=2, speculative="eagle", num_speculative_tokens=1,
                     acceptance_rate=0.5, requests=4, users=2)