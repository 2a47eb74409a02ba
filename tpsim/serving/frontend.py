"""The serving front end: the HTTP (OpenAI-compatible) server's work per request and per
streamed token, in a process of its own beside the engine.

    t_fe(step) = (frontend_request_us x r + frontend_token_us x k) x 1e-6 / api_servers

for a step that admits r requests (parsing the request, applying the chat template and
tokenizing the prompt) and streams k tokens (detokenizing each and sending it as a server-sent
event). The front end runs concurrently with the engine core: vLLM moved its API server into a
process of its own in v0.6.0, when profiling Llama 3 8B on one H100 found the HTTP API server
taking 33% of the run's time (blog.vllm.ai/2024/09/05/perf-update.html); one such process
uses one CPU core and becomes the bottleneck as GPUs get faster (vllm-project/vllm#12705),
hence ``--api-server-count`` (vllm-project/vllm#17546), which spreads the work over several
processes. The engine's outputs pass through it, so in a steady run the two form a pipeline
whose slower stage sets the pace: a step lasts max(t_engine, t_fe), t_engine from
:func:`tpsim.serving.host.step_wall_s`. With the front end the slower one, the clients see
its pace (a closed loop's users send their next request later, an open queue grows).
The coefficients are :class:`~tpsim.spec.serve.ServeSettings` fields, with their fit.
"""
from __future__ import annotations

import numpy as np


def frontend_s(st, requests, tokens):
    """t_fe = (frontend_request_us x requests + frontend_token_us x tokens) x 1e-6 /
    api_servers, s (module docstring)."""
    if isinstance(requests, int) and isinstance(tokens, int):     # one step: a float
        return (st.frontend_request_us * requests + st.frontend_token_us * tokens) * 1e-6 \
            / st.api_servers
    work = st.frontend_request_us * np.asarray(requests, float) + \
        st.frontend_token_us * np.asarray(tokens, float)
    return work * 1e-6 / st.api_servers


def frontend_latency_s(st) -> float:
    """A request's time through the front end before the engine sees it, s:
    frontend_latency_us x 1e-6 (module docstring)."""
    return st.frontend_latency_us * 1e-6


def paced_wall_s(engine_s, fe_s):
    """A step's wall time with the front end beside the engine: max(t_engine, t_fe)."""
    if isinstance(engine_s, float) and isinstance(fe_s, float):
        return max(engine_s, fe_s)
    return np.maximum(engine_s, fe_s)


__all__ = ["frontend_s", "frontend_latency_s", "paced_wall_s"]
