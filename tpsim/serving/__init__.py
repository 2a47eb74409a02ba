"""Serving: prefill and decode of a batch priced on the layer model (infer: tpsim.infer), its
memory (memory) and result types (result)."""
