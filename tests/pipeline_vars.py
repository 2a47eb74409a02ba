"""The step bound's variables as chunk and transfer times, shared by the tests that simulate the
pipeline a bound bounds (tests/search/test_price.py, tests/training/test_step_bound.py)."""


def chunk_times(p, v, layers, t):
    """chunk_s(stage, chunk, kind): a chunk's forward ("F") or backward time from the bound's
    variables t = (f, b, f_emb, b_emb, f_out, b_out): its layers' f or b, plus the embedding's on
    the first virtual stage and the output layer's on the last."""
    last = p * v - 1

    def chunk_s(stage, chunk, kind):
        g = chunk * p + stage
        if kind == "F":
            return layers[g] * t[0] + (g == 0) * t[2] + (g == last) * t[4]
        return layers[g] * t[1] + (g == 0) * t[3] + (g == last) * t[5]
    return chunk_s


def transfer_times(p, c):
    """transfer(a, b): c[j] between stages j and j + 1, c[p - 1] from the last to the first."""
    def transfer(a, b):
        return c[min(a, b)] if abs(a - b) == 1 else c[p - 1]
    return transfer


def draw_times(draw, st, p, v):
    """The bound's chunk-time variables t (forward, backward, the embedding's and the output
    layer's), the pre-scale kernels per virtual stage and the transfers per stage pair, drawn by
    a hypothesis ``draw`` (``st``: hypothesis.strategies); with p = 2 the wrap from the last
    stage to the first is the same pair, one transfer."""
    dur = st.floats(0.0, 3.0, allow_nan=False)
    t = [draw(st.floats(0.1, 2.0)), draw(st.floats(0.1, 4.0))] + [draw(dur) for _ in range(4)]
    scale = [draw(st.floats(0.0, 0.1)) for _ in range(p * v)]
    c = [draw(st.floats(0.0, 0.5)) for _ in range(p)]
    if p == 2:
        c[1] = c[0]
    return t, scale, c
