"""Serving: prefill and decode of a batch priced on the layer model (infer: tpsim.infer), its
memory (memory) and result types (result); an engine loop serving arriving requests with
continuous batching, chunked prefill and a paged KV cache (engine: tpsim.serve), its step-time
tables (step_model), requests (arrivals) and result types (serve_result)."""
