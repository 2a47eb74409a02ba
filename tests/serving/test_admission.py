"""SGLang's admission (tpsim.serving.admission): closed-form cases of a request admitted or
held, the ratio's decay and reset, and the engine under it."""
from __future__ import annotations

from collections import deque
from types import SimpleNamespace

import numpy as np
import pytest

from tpsim.base.errors import ConfigError
from tpsim.serving.admission import Greedy, Reserving
from tpsim.serving.engine import serve


def loop(free, bs=16, prompt=(100, 500), gen=(1000, 400), done=(0, 0)):
    """Request 0 running (its prompt cached, ``done`` tokens written), request 1 waiting."""
    return SimpleNamespace(running=[0], waiting=deque([1]), free=free, bs=bs,
                           prompt=np.array(prompt), gen=np.array(gen), done=list(done),
                           computed=[prompt[0] + done[0], 0])


@pytest.mark.parametrize("blocks, admitted", [(63, True), (62, False)])
def test_v03_reserves_the_running_requests_share_at_the_ratio(blocks, admitted):
    """v0.3.0 starts at ratio 0.1: rem = F - 0.1 x 1000; the head needs 500 + 400 < rem, so F
    > 1000: 63 blocks (1008 tokens) admit it, 62 (992) hold it."""
    assert Reserving("sglang-0.3", 1.0).fits(loop(blocks), 1) is admitted


@pytest.mark.parametrize("blocks, admitted", [(157, True), (156, False)])
def test_v04_checks_that_every_request_can_finish(blocks, admitted):
    """v0.4.1, ignore_eos: sorted by tokens left, head (400 left, 500 held) then the running
    one (1000, 100): F - 500 - 1000 x 2 > 0 and F - 500 + 500 - 1000 > 0, so F > 2500: 157
    blocks (2512 tokens) admit it, 156 (2496) hold it."""
    assert Reserving("sglang-0.4", 1.0).fits(loop(blocks), 1) is admitted


def test_v04_second_admission_of_a_step_needs_the_reserved_budget():
    """A request after the step's first is admitted only while rem_total > 0. Request 0 holds
    4000 tokens with 1 left, request 1 (admitted this step) 10 with 1000 left, the head 10
    with 2 left: the walk (sorted 1, 2, 1000) needs F - 10 > 6 only, while rem = F - 0.7 x 1 -
    1000 > 0 needs F > 1000.7: 63 blocks (1008 tokens) admit it, 62 (992) hold it, unless it
    is the step's first."""
    def state(blocks):
        return SimpleNamespace(running=[0, 1], waiting=deque([2]), free=blocks, bs=16,
                               prompt=np.array([3000, 10, 10]), gen=np.array([1001, 1000, 2]),
                               done=[1000, 0, 0], computed=[4000, 10, 0])
    pol = Reserving("sglang-0.4", 1.0)
    assert pol.fits(state(63), 2, new=1)
    assert not pol.fits(state(62), 2, new=1)
    assert pol.fits(state(62), 2, new=0)


def test_ratio_decays_per_decode_step_and_resets():
    v4 = Reserving("sglang-0.4", 1.0)
    assert v4.ratio == 0.7 and v4.low == pytest.approx(0.098)
    v4.decoded(300)
    assert v4.ratio == pytest.approx(0.7 - 300 * 0.602 / 600)
    v4.decoded(10**4)
    assert v4.ratio == pytest.approx(0.098)
    v4.idle()
    assert v4.ratio == 0.7
    v3 = Reserving("sglang-0.3", 1.0)
    assert v3.ratio == pytest.approx(0.1)            # v0.3.0 starts at its floor
    v3.idle()
    v3.decoded(100)
    assert v3.ratio == pytest.approx(0.6)
    assert Reserving("sglang-0.4", 2.0).init == 1.0  # min(0.7 x 2, 1)


def test_retraction_sets_the_ratio_from_the_requests_left():
    """(written + 20 x n) / their max_new_tokens: (10 + 30 + 40) / 200."""
    pol = Reserving("sglang-0.4", 1.0)
    lp = loop(0, gen=(100, 100), done=(10, 30))
    lp.running = [0, 1]
    pol.retracted(lp)
    assert pol.ratio == pytest.approx(0.4)


def test_steps_to_fit_is_the_first_step_that_fits():
    """The vectorized look-ahead agrees with stepping the state one decode step at a time."""
    pol = Reserving("sglang-0.3", 1.0)
    pol.idle()                                            # ratio 0.7
    base = loop(900, bs=1, prompt=(100, 200), gen=(1000, 100))
    k = pol.steps_to_fit(base, 400)
    for j in range(1, 401):
        lp = loop(900 - j, bs=1, prompt=(100, 200), gen=(1000, 100), done=(j, 0))
        step = Reserving("sglang-0.3", 1.0)
        step.ratio = pol.ratio
        step.decoded(j)
        if step.fits(lp, 1):
            break
    assert 1 < k == j < 400
    assert Greedy().steps_to_fit(base, 400) == 1


def test_reserving_admission_avoids_preemption():
    """TP 2 holds ~57k tokens: 200 requests of 2048 + 256 preempt under vLLM's rule, not under
    SGLang's, which runs fewer at once; every request still gets its tokens."""
    kw = dict(tp=2, requests=200, prompt=2048, gen=256)
    greedy = serve("llama2-70b", "dgx-h100", **kw)
    reserving = serve("llama2-70b", "dgx-h100", admission="sglang-0.4", **kw)
    assert greedy.scheduler.preemptions > 0 and reserving.scheduler.preemptions == 0
    assert (reserving.generated == 256).all()
    assert reserving.scheduler.mean_running < greedy.scheduler.mean_running


@pytest.mark.parametrize("kw, flag", [(dict(admission="sglang"), "--admission"),
                                      (dict(schedule_conservativeness=-1.0),
                                       "--schedule-conservativeness")])
def test_bad_values_name_their_flag(kw, flag):
    with pytest.raises(ConfigError, match=flag):
        serve("llama2-70b", requests=2, **kw)


def test_conservativeness_needs_a_reserving_admission():
    """--schedule-conservativeness scales SGLang's reservation: under vLLM's admission, which
    reserves nothing, a non-default value is refused rather than ignored."""
    with pytest.raises(ConfigError, match="--schedule-conservativeness.*sglang"):
        serve("llama2-70b", requests=2, schedule_conservativeness=0.5)
    ran = serve("llama2-70b", requests=2, admission="sglang-0.4", schedule_conservativeness=0.5)
    assert len(ran.generated) == 2 and (ran.generated == 256).all()  # the default --gen
