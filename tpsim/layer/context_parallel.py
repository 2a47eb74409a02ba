"""Context-parallel attention: each of ``cp`` ranks holds seq_len / cp tokens of every sequence.

Megatron-core with Transformer Engine (``--context-parallel-size``, ``--cp-comm-type``;
TransformerEngine ``pytorch/attention/dot_product_attention/context_parallel.py``). Every op
outside the attention core is per token, so it runs on the rank's s = seq_len / cp tokens
unchanged (:func:`tpsim.layer.dims.layer_dims` divides s); only the core needs the other
ranks' keys and values. For the causal mask's balance the sequence is cut into 2 cp chunks and
rank r holds chunks r and 2 cp - 1 - r, so every rank has the same (query, key) pairs: the
full causal count / cp.

``p2p`` (AttnFuncWithCPAndKVP2P): a ring. Step 0 is the rank's own chunk pair, causal
(s queries, s keys); each of steps 1..cp-1 attends to the K/V the previous step received from
the ring's previous rank, half of an s x s block (s queries, s/2 keys, no mask), while the K/V
for the next step travels (one send-recv of 2 b s kv bytes, K and V): per step, the time is
the longer of the two. The forward ends with the output correction (the partial outputs merged
by their log-sum-exp: read cp partial outputs, write one, (cp + 1) b s q bytes). The backward
runs the ring again: step i sends the K/V of step i and the dK/dV accumulated so far (step 0
K/V only, step cp - 1 dK/dV only: 2 (cp - 1) K/V-sized messages in all) beside the attention
backward of step i; the last dK/dV arrives after the last step.

``all-gather`` (AttnFuncWithCPAndKVAllGather, Llama 3's): the K/V of the whole sequence is
all-gathered (b s cp 2 kv bytes, the gathered output as nccl-tests counts it) before the
attention of the rank's two query chunks (rank 0's: s/2 queries on s/2 keys and s/2 queries on
s cp keys, the same pairs as any rank's); the backward gathers K/V again and reduce-scatters
dK/dV.

``a2a`` (AttnFuncWithCPAndQKVOA2A, DeepSpeed-Ulysses): an all-to-all turns the rank's s tokens
of every head into all s cp tokens of heads / cp heads, for Q, K and V (b s (q + 2 kv) bytes
per rank) and back for the output (b s q); the attention runs on the whole sequence with
heads / cp heads. The backward mirrors it (dO all-to-all, attention backward, dQ/dK/dV
all-to-all). Every head per rank must split over cp: heads / tp and kv_heads / tp divisible
by cp.

Each rank keeps what the unsplit kernel keeps, for its tokens: q, k, v (b s (q + 2 kv) bytes),
so the layer's activations are 1/cp of CP 1's. Every collective is on the process group
"cp" (ranks tp apart: Megatron's order tp-cp-ep-dp-pp). A ring step's send-recv is priced
on its slowest hop, the ring's wrap from member cp - 1 back to member 0: every rank sends at
once and the step waits for the last, which in a group that spans nodes crosses them.
"""
from __future__ import annotations

from ..base.errors import ConfigError
from .ops import Attention, Collective, SendRecv

COMMS = ("p2p", "all-gather", "a2a")     # a2a+p2p (hierarchical) is refused by check_cp


def check_cp(model, tp: int, cp: int, comm: str, seq_len: int, attention: str) -> None:
    """Raise ConfigError naming the flag unless ``cp`` ranks can split this model's
    attention: the sequence in 2 cp chunks, a fused (flash) kernel, and with a2a every head
    of a TP rank divisible by cp."""
    if cp == 1:
        return
    if seq_len % (2 * cp):
        raise ConfigError("--seq", "", f"a multiple of 2 x --cp ({2 * cp}: two chunks per rank "
                          "for the causal mask's balance)", seq_len)
    if attention == "unfused":
        raise ConfigError("--attention", "", "a fused (flash) kernel with --cp > 1 (Transformer "
                          "Engine's context parallelism runs only those)", attention)
    if comm not in COMMS:
        raise ConfigError("--cp-comm", "", f"one of {', '.join(COMMS)} (a2a+p2p needs Megatron's "
                          "--hierarchical-context-parallel-sizes, not modelled yet)", comm)
    heads, kv = model.heads // tp, model.kv_heads_per_rank(tp)
    if comm == "a2a" and (heads % cp or kv % cp):
        raise ConfigError("--cp", "", f"a divisor of the {heads} query and {kv} key/value heads "
                          f"per TP rank with --cp-comm a2a (each rank takes heads / cp)", cp)


def kv_bytes(d) -> float:
    """The rank's K and V: 2 b s kv x bytes per element."""
    return 2 * d.T * d.kv * d.bpe


def _attention(kernel, backward: bool, sq, skv, causal: bool, ulysses: bool = False):
    """An attention op of ``sq(d)`` queries on ``skv(d)`` keys; ``ulysses``: heads / cp."""
    def make(d):
        split = d.cp if ulysses else 1
        return Attention(d.b, d.heads // split, max(1, d.kv_heads // split), sq(d), skv(d), d.d,
                         d.dtype, causal, backward, kernel)
    return make


def _ring_step(n: int):
    """A ring step's send-recv of ``n`` K/V-sized messages on group cp (module docstring)."""
    return lambda d: SendRecv(n * kv_bytes(d), "cp", -1, (n * 2, d.T, d.kv), d.dtype)


def _saved(d) -> float:
    return d.T * (d.q + 2 * d.kv) * d.bpe


def _diagonal(d):
    return d.s


def _half(d):
    return d.s // 2


def _whole(d):
    return d.s * d.cp


def p2p_fwd(B, qkv: str, kernel, cp: int) -> str:
    """The ring's forward (module docstring): step i's attention beside step i + 1's K/V."""
    received, attn = None, []
    for i in range(cp):
        sending = B.add(f"fwd.attn.cp.kv{i + 1}", _ring_step(1), "comm", (qkv, received),
                        group="cp") if i + 1 < cp else None
        if i == 0:
            attn.append(B.add("fwd.attn.cp0", _attention(kernel, False, _diagonal, _diagonal,
                                                         True), "compute", (qkv,), saved=_saved))
        else:
            attn.append(B.add(f"fwd.attn.cp{i}", _attention(kernel, False, _diagonal, _half,
                                                            False), "compute", (received,)))
        received = sending
    return B.eltwise("fwd.attn.cp.correct",
                     lambda d: (d.T, d.q, (d.cp + 1) * d.T * d.q * d.bpe), tuple(attn))


def p2p_bwd(B, grad, kernel, cp: int) -> tuple:
    """The ring's backward (module docstring): step i's attention backward beside the K/V of
    step i and the dK/dV accumulated through step i - 1."""
    comm, attn = None, None
    for i in range(cp):
        n = 1 if i in (0, cp - 1) else 2
        prev_attn, prev_comm = attn, comm
        comm = B.add(f"bwd.attn.cp.kv{i}", _ring_step(n), "comm", (grad, prev_comm, prev_attn),
                     group="cp")
        sizes = (_diagonal, _diagonal, True) if i == 0 else (_diagonal, _half, False)
        attn = B.add(f"bwd.attn.cp{i}", _attention(kernel, True, *sizes), "compute",
                     (grad, prev_comm), forward_of=f"fwd.attn.cp{i}")
    return attn, comm


def all_gather_fwd(B, qkv: str, kernel, cp: int) -> str:
    """All-gather the K/V, then the rank's two query chunks (module docstring)."""
    ag = B.collective("fwd.attn.cp.all-gather", "all-gather", (qkv,), size=_gathered, group="cp")
    a = B.add("fwd.attn.cp0", _attention(kernel, False, _half, _half, True), "compute", (ag,),
              saved=_saved)
    return B.add("fwd.attn.cp1", _attention(kernel, False, _half, _whole, True), "compute",
                 (ag, a))


def all_gather_bwd(B, grad, kernel, cp: int) -> tuple:
    ag = B.collective("bwd.attn.cp.all-gather", "all-gather", (grad,), size=_gathered,
                      group="cp")
    a = B.add("bwd.attn.cp0", _attention(kernel, True, _half, _half, True), "compute",
              (grad, ag), forward_of="fwd.attn.cp0")
    b = B.add("bwd.attn.cp1", _attention(kernel, True, _half, _whole, True), "compute",
              (grad, ag, a), forward_of="fwd.attn.cp1")
    rs = B.collective("bwd.attn.cp.reduce-scatter", "reduce-scatter", (a, b), size=_gathered,
                      group="cp")
    return b, rs


def _gathered(d):
    """The whole sequence's K/V: cp x :func:`kv_bytes` (the all-gather's output, the
    reduce-scatter's input)."""
    return d.cp * kv_bytes(d), (d.T * d.cp, 2 * d.kv), d.dtype


def _a2a(width):
    return lambda d: (d.T * width(d) * d.bpe, (d.T, width(d)), d.dtype)


def _qkv_width(d):
    return d.q + 2 * d.kv


def _q_width(d):
    return d.q


def a2a_fwd(B, qkv: str, kernel, cp: int) -> str:
    """Ulysses: Q, K, V all-to-all, attention on heads / cp, output all-to-all."""
    x = B.collective("fwd.attn.cp.a2a-qkv", "all-to-all", (qkv,), size=_a2a(_qkv_width),
                     group="cp")
    x = B.add("fwd.attn.cp0", _attention(kernel, False, _whole, _whole, True, True), "compute",
              (x,), saved=_saved)
    return B.collective("fwd.attn.cp.a2a-out", "all-to-all", (x,), size=_a2a(_q_width),
                        group="cp")


def a2a_bwd(B, grad, kernel, cp: int) -> tuple:
    x = B.collective("bwd.attn.cp.a2a-out", "all-to-all", (grad,), size=_a2a(_q_width),
                     group="cp")
    x = B.add("bwd.attn.cp0", _attention(kernel, True, _whole, _whole, True, True), "compute",
              (x,), forward_of="fwd.attn.cp0")
    return (B.collective("bwd.attn.cp.a2a-qkv", "all-to-all", (x,), size=_a2a(_qkv_width),
                         group="cp"),)


FORWARD = {"p2p": p2p_fwd, "all-gather": all_gather_fwd, "a2a": a2a_fwd}
BACKWARD = {"p2p": p2p_bwd, "all-gather": all_gather_bwd, "a2a": a2a_bwd}


def cp_attention_fwd(B, qkv: str, kernel, cp: int, comm: str) -> str:
    """The attention core's forward split over ``cp`` ranks by ``comm`` (module docstring)."""
    return FORWARD[comm](B, qkv, kernel, cp)


def cp_attention_bwd(B, grad, kernel, cp: int, comm: str) -> tuple:
    """Its backward: the ops the QKV linear's backward waits for."""
    return BACKWARD[comm](B, grad, kernel, cp)
