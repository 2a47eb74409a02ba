"""A TP degree that does not split a model is refused naming --tp and listing the ones that do."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from tpsim.base.errors import ConfigError
from tpsim.spec.model import load_model
from tpsim.spec.tp_split import splits


@given(tp=st.integers(1, 256))
def test_splits_is_the_three_divisibility_conditions(tp):
    m = load_model("llama3-70b")          # 64 heads, 8 kv heads, MLP 28672
    kv = 8 % tp == 0 or tp % 8 == 0
    assert splits(m, tp) == (64 % tp == 0 and 28672 % tp == 0 and kv)


def test_the_refusal_lists_the_degrees_that_split():
    m = load_model("gpt3-125m")           # 12 heads, MLP 3072, no grouped-query attention
    with pytest.raises(ConfigError, match=r"^--tp: .*\(got 8\); --tp 1, 2, 3, 4, 6, 12 split"):
        m.check_tp(8)
    m.check_tp(6)
