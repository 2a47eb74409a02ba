"""What no Transformer Engine linear holds: the ends of a stage and its norms."""
from __future__ import annotations

from tpsim.spec.model import load_model
from tpsim.spec.model_params import plain_params


def test_plain_params_are_the_embedding_output_layer_and_norms():
    """Llama 3 8B (untied, RMSNorm), TP 2: the first stage holds the embedding (padded vocab
    / 2 rows), the last the output layer and final norm, every layer two norms of h."""
    m = load_model("llama3-8b")
    rows = m.padded_vocab(2) // 2 * m.hidden
    assert plain_params(m, 2, 16, True, False) == rows + 16 * 2 * m.hidden
    assert plain_params(m, 2, 16, False, True) == rows + m.hidden + 16 * 2 * m.hidden
    assert plain_params(m, 2, 32, True, True) == 2 * rows + m.hidden + 32 * 2 * m.hidden


def test_a_tied_output_layer_on_the_embeddings_stage_is_the_embedding():
    """GPT-3 (tied, LayerNorm: weight and bias), one stage: one vocabulary matrix."""
    m = load_model("gpt3")
    rows = m.padded_vocab(4) // 4 * m.hidden
    assert plain_params(m, 4, m.layers, True, True) == \
        rows + 2 * m.hidden + m.layers * 2 * 2 * m.hidden
