"""The window fields of a training layer (:func:`tpsim.layer.dims.window_fields`): gpt-oss's
alternating 128-token band as the share of the layers the simulated one stands for."""
from __future__ import annotations

import dataclasses

import pytest

from tpsim.base.errors import ConfigError
from tpsim.layer.dims import window_fields
from tpsim.layer.ops import Attention
from tpsim.spec.model import load_model

OSS = load_model("gpt-oss-120b")


def test_gpt_oss_moe_layers_half_banded():
    """36 MoE layers, layers 0, 2, ... banded: the MoE layer is banded on half; no dense one."""
    assert window_fields(OSS, True, "fused", 1) == {"window": 128, "windowed": 0.5}
    assert window_fields(OSS, False, "fused", 1) == {}
    assert window_fields(dataclasses.replace(OSS, sliding_window=None), True, "fused", 1) == {}


def test_dense_and_moe_shares_follow_the_layer_kinds():
    """8 layers, MoE on 2, 4, 6 (first_dense_layers 1, i % 2 == 0), a window on 0 and 4
    (i % 4 == 0): one of the 5 dense layers (0) and one of the 3 MoE ones (4) banded."""
    m = dataclasses.replace(OSS, layers=8, first_dense_layers=1, moe_layer_freq=2,
                            sliding_window_freq=4)
    assert window_fields(m, False, "fused", 1) == {"window": 128, "windowed": 1 / 5}
    assert window_fields(m, True, "fused", 1) == {"window": 128, "windowed": 1 / 3}


@pytest.mark.parametrize("attention, cp, flag", [("unfused", 1, "--attention"),
                                                  ("fused", 2, "--cp")])
def test_window_beside_unfused_attention_or_cp_is_refused(attention, cp, flag):
    with pytest.raises(ConfigError, match=f"{flag}.*sliding-window attention \\(128 keys\\)"):
        window_fields(OSS, True, attention, cp)


def test_windowed_share_is_the_mean_of_its_layers_flops():
    """s 4096, W 128: the band's pairs s W - W (W - 1) / 2 = 516,160, the full triangle's
    s (s + 1) / 2 = 8,390,656; half banded: their mean, 4 b H d pairs forward."""
    op = Attention(1, 64, 8, 4096, 4096, 64, "bf16", window=128, windowed=0.5)
    band, full = 4096 * 128 - 128 * 127 / 2, 4096 * 4097 / 2
    assert band == 516_160 and op.pairs == (band + full) / 2
    assert op.flops == 4 * 64 * 64 * (band + full) / 2
    assert op.keys == 128 and dataclasses.replace(op, window=0).keys == 4096
