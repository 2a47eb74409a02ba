"""YaRN's attention factor read from a Hugging Face config's rope_scaling (tpsim.spec.hf_config)."""
from __future__ import annotations

import math

from tpsim.spec.hf_config import hf_mapping


def test_hf_yarn_attention_factor():
    """rope_scaling of rope_type yarn: 0.1 ln(factor) + 1 without mscale keys, their ratio
    with both (DeepSeek-V3's 1.0 / 1.0: 1), attention_factor when given; others ignored."""
    base = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
            "num_hidden_layers": 2, "intermediate_size": 128, "vocab_size": 100,
            "max_position_embeddings": 256, "hidden_act": "silu"}

    def factor(rs):
        out, _ = hf_mapping({**base, "rope_scaling": rs}, "config.json", "x")
        return out.get("rope_attention_factor", 1.0)
    assert factor({"rope_type": "yarn", "factor": 32.0}) == 0.1 * math.log(32) + 1
    assert factor({"rope_type": "yarn", "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0}) == 1
    assert factor({"rope_type": "yarn", "factor": 4, "attention_factor": 1.2}) == 1.2
    assert factor({"rope_type": "llama3", "factor": 8.0}) == 1.0
