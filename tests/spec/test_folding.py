"""Megatron-core's MoE parallel folding (tpsim.spec.folding): the expert groups of a stage's
ranks, and the checks Megatron-core makes."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from tpsim.base.errors import ConfigError
from tpsim.spec.folding import fold
from tpsim.spec.parallel import Parallelism


@given(tp=st.sampled_from([1, 2, 4, 8]), dp=st.sampled_from([1, 2, 4, 8, 16]),
       pp=st.sampled_from([1, 2, 4]), etp=st.sampled_from([1, 2, 4]),
       ep=st.sampled_from([1, 2, 4, 8]))
def test_folded_groups_tile_a_stage(tp, dp, pp, etp, ep):
    """etp x ep x edp = tp x dp: the ETP group is etp consecutive ranks, the EP group ep ranks
    etp apart, the EDP group edp ranks etp ep apart: together every rank of stage 0 once."""
    par = Parallelism(tp=tp, dp=dp, pp=pp)
    if (tp * dp) % (etp * ep):
        with pytest.raises(ConfigError, match="--ep" if (tp * dp) % ep else "--expert-tp"):
            fold(par, ep, etp, 64)
        return
    f = fold(par, ep, etp, 64)
    assert f.etp * f.ep * f.edp == tp * dp
    ranks = {a + b + c for a in f.group("etp").ranks for b in f.group("ep").ranks
             for c in f.group("edp").ranks}
    assert ranks == set(range(tp * dp))
    assert f.group("tp") == par.group("tp") and f.world == par.world


@pytest.mark.parametrize("args, flag", [
    ((Parallelism(tp=2, dp=4), 3, 1, 6), "--ep"),        # 3 does not divide 8 ranks
    ((Parallelism(tp=2, dp=4), 4, 4, 8), "--expert-tp"),  # 4 x 4 does not divide 8 ranks
    ((Parallelism(tp=2, dp=4), 4, 1, 6), "--ep"),        # 4 does not divide 6 experts
    ((Parallelism(tp=2, dp=4), 2, 1, 0), "--ep"),        # a dense model
    ((Parallelism(tp=2, dp=4), 2, 4, 8, "m", 6), "--expert-tp"),   # 4 does not divide 6
])
def test_bad_folds_name_their_flag(args, flag):
    with pytest.raises(ConfigError, match=flag):
        fold(*args)
