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
the longer of the two. Two buffers hold the K/V in flight, so step i + 1's transfer also waits
for step i - 1's attention, whose buffer it fills. The forward ends with the output correction
(:func:`correction_bytes`: the partial outputs merged by their log-sum-exp in fp32, then cast
back; with it the copy of the rank's K and V into the ring's first buffer). The backward runs
the ring again: step i sends the K/V of step i and the dK/dV accumulated so far (step 0 K/V
only, step cp - 1 dK/dV only: 2 (cp - 1) K/V-sized messages in all) beside the attention
backward of step i, whose dQ, dK, dV are then folded into the running sums
(:func:`accumulate_bytes`) once the step's message has arrived (its dK/dV are the ones added to).

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

``a2a+p2p`` (Megatron's ``--hierarchical-context-parallel-sizes a cp/a``): the all-to-all over
the a CP ranks of a node (:func:`hierarchical_sizes`: as many as the node holds beside TP and
the heads allow) gives each s a tokens of heads / a heads, and the ring runs over the cp / a
nodes on those (its steps s a tokens, its K/V messages the same bytes as the ring's); the output
is all-to-all'd back. Its groups are ``cp.a2a`` and ``cp.ring`` (:func:`subgroups`).

Each rank keeps what the unsplit kernel keeps, for its tokens: q, k, v (b s (q + 2 kv) bytes),
so the layer's activations are 1/cp of CP 1's. Every collective is on the process group
"cp" (ranks tp apart: Megatron's order tp-cp-ep-dp-pp). A ring step's send-recv is priced
on its slowest hop, the ring's wrap from member cp - 1 back to member 0: every rank sends at
once and the step waits for the last, which in a group that spans nodes crosses them.
"""
from __future__ import annotations

from ..base.errors import ConfigError
from ..cluster.topology import BYTES_PER_ELEMENT
from ..spec.parallel import Group
from .ops import Attention, SendRecv

COMMS = ("p2p", "all-gather", "a2a", "a2a+p2p")


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
        raise ConfigError("--cp-comm", "", f"one of {', '.join(COMMS)}", comm)
    heads, kv = model.heads // tp, model.kv_heads_per_rank(tp)
    if comm == "a2a" and (heads % cp or kv % cp):
        raise ConfigError("--cp", "", f"a divisor of the {heads} query and {kv} key/value heads "
                          f"per TP rank with --cp-comm a2a (each rank takes heads / cp)", cp)


def kv_bytes(d) -> float:
    """The rank's K and V: 2 b s kv x bytes per element."""
    return 2 * d.T * d.kv * d.bpe


def _attention(kernel, backward: bool, sq, skv, causal: bool, split=None):
    """An attention op of ``sq(d)`` queries on ``skv(d)`` keys, of heads / ``split(d)`` heads
    (None: all the rank's)."""
    def make(d):
        n = split(d) if split else 1
        return Attention(d.b, d.heads // n, max(1, d.kv_heads // n), sq(d), skv(d), d.d,
                         d.dtype, causal, backward, kernel)
    return make


def correction_bytes(d, steps: int) -> float:
    """The ring forward's elementwise traffic beside its attention kernels, on the ring's last
    rank (every step's keys before its queries: the whole output corrected at every step; the
    others correct half of it at some steps, and the ring waits for the slowest):

        bytes = b s q [(B + F) + (steps - 1)(2F + B) + (F + B)] + 2 (2 b s kv B)

    with B the activations' bytes and F = 4: step 0's partial output read, the fp32 output
    written (``flash_attn_fwd_out_correction_init``); each later step's partial read beside the
    fp32 output, which is read and written (``flash_attn_fwd_out_correction``); the fp32 output
    cast back (``out.to(fwd_nominal_dtype)``); the rank's K and V concatenated into the ring's
    first buffer (``torch.cat``: read and write). Transformer Engine's
    ``AttnFuncWithCPAndKVP2P.forward`` (``pytorch/attention/dot_product_attention/
    context_parallel.py``) with 16-bit attention, as Megatron-core runs it without
    ``--fp8-dot-product-attention``."""
    f = BYTES_PER_ELEMENT["fp32"]
    out = d.T * d.q * ((d.bpe + f) + (steps - 1) * (2 * f + d.bpe) + (f + d.bpe))
    return out + 2 * kv_bytes(d)


def accumulate_bytes(d, i: int) -> float:
    """Step ``i`` of the ring backward folds its dQ, dK, dV into the running sums (16-bit
    attention: ``AttnFuncWithCPAndKVP2P.backward``), on the ring's last rank (the whole of
    each):

        bytes = (b s q B + 2 b s kv B) c  [+ 2 (2 b s kv B) at step 0]

    c = 2 at step 0 (``dq.copy_(dq_)``, dK and dV copied: read, write) and 3 after
    (``dq.add_(dq_)``, ``dk.add_``, ``dv.add_``: read both, write); at step 0 the rank's K and
    V are also copied into the ring's first buffer (``p2p_comm_buffers[0][0].copy_(kv)``).
    It waits for the step's message: the dK/dV it adds to are the ones received."""
    c = 2 if i == 0 else 3
    grads = (d.T * d.q * d.bpe + kv_bytes(d)) * c
    return grads + (2 * kv_bytes(d) if i == 0 else 0.0)


def _ring_step(n: int, group: str = "cp"):
    """A ring step's send-recv of ``n`` K/V-sized messages on ``group`` (module docstring)."""
    return lambda d: SendRecv(n * kv_bytes(d), group, -1, (n * 2, d.T, d.kv), d.dtype)


def _saved(d) -> float:
    return d.T * (d.q + 2 * d.kv) * d.bpe


def _half(d):
    return d.s // 2


def _whole(d):
    return d.s * d.cp


def _by_cp(d):
    return d.cp


def p2p_fwd(B, qkv: str, kernel, cp: int, a: int = 1, group: str = "cp") -> str:
    """The ring's forward (module docstring): step i's attention beside step i + 1's K/V; ``a``
    > 1: the ring of a2a+p2p, cp / a steps of s a tokens on heads / a."""
    steps, rows, half = cp // a, (lambda d: d.s * a), (lambda d: d.s * a // 2)
    heads = (lambda d: a) if a > 1 else None
    received, attn = None, []
    for i in range(steps):
        # double-buffered: step i + 1's K/V lands in the buffer step i - 1's attention read
        sending = B.add(f"fwd.attn.cp.kv{i + 1}", _ring_step(1, group), "comm",
                        (qkv, received, attn[i - 1] if i else None), group=group) \
            if i + 1 < steps else None
        if i == 0:
            attn.append(B.add("fwd.attn.cp0", _attention(kernel, False, rows, rows, True, heads),
                              "compute", (qkv,), saved=_saved))
        else:
            attn.append(B.add(f"fwd.attn.cp{i}", _attention(kernel, False, rows, half, False,
                                                            heads), "compute", (received,)))
        received = sending
    if steps == 1:
        return attn[0]
    return B.eltwise("fwd.attn.cp.correct", lambda d: (d.T, d.q, correction_bytes(d, steps)),
                     tuple(attn), host_ops=steps + 1)


def p2p_bwd(B, grad, kernel, cp: int, a: int = 1, group: str = "cp") -> tuple:
    """The ring's backward (module docstring): step i's attention backward beside the K/V of
    step i and the dK/dV accumulated through step i - 1."""
    steps, rows, half = cp // a, (lambda d: d.s * a), (lambda d: d.s * a // 2)
    heads = (lambda d: a) if a > 1 else None
    comm, attn = None, grad
    for i in range(steps):
        n = 1 if i in (0, steps - 1) else 2
        prev_attn, prev_comm = attn, comm
        if steps > 1:
            comm = B.add(f"bwd.attn.cp.kv{i}", _ring_step(n, group), "comm",
                         (grad, prev_comm, prev_attn), group=group)
        sizes = (rows, rows, True) if i == 0 else (rows, half, False)
        attn = B.add(f"bwd.attn.cp{i}", _attention(kernel, True, *sizes, heads), "compute",
                     (grad, prev_comm), forward_of=f"fwd.attn.cp{i}")
        if steps > 1:
            attn = B.eltwise(f"bwd.attn.cp{i}.accumulate",
                             lambda d, i=i: (d.T, d.q, accumulate_bytes(d, i)), (attn, comm))
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
    x = B.add("fwd.attn.cp0", _attention(kernel, False, _whole, _whole, True, _by_cp),
              "compute", (x,), saved=_saved)
    return B.collective("fwd.attn.cp.a2a-out", "all-to-all", (x,), size=_a2a(_q_width),
                        group="cp")


def a2a_bwd(B, grad, kernel, cp: int) -> tuple:
    x = B.collective("bwd.attn.cp.a2a-out", "all-to-all", (grad,), size=_a2a(_q_width),
                     group="cp")
    x = B.add("bwd.attn.cp0", _attention(kernel, True, _whole, _whole, True, _by_cp),
              "compute", (x,), forward_of="fwd.attn.cp0")
    return (B.collective("bwd.attn.cp.a2a-qkv", "all-to-all", (x,), size=_a2a(_qkv_width),
                         group="cp"),)


def hierarchical_fwd(B, qkv: str, kernel, cp: int, a: int) -> str:
    """a2a+p2p: Q, K, V all-to-all over the a ranks of a node (heads / a each), the ring over
    the cp / a nodes, the output all-to-all back."""
    x = B.collective("fwd.attn.cp.a2a-qkv", "all-to-all", (qkv,), size=_a2a(_qkv_width),
                     group="cp.a2a")
    x = p2p_fwd(B, x, kernel, cp, a, "cp.ring")
    return B.collective("fwd.attn.cp.a2a-out", "all-to-all", (x,), size=_a2a(_q_width),
                        group="cp.a2a")


def hierarchical_bwd(B, grad, kernel, cp: int, a: int) -> tuple:
    x = B.collective("bwd.attn.cp.a2a-out", "all-to-all", (grad,), size=_a2a(_q_width),
                     group="cp.a2a")
    core = p2p_bwd(B, x, kernel, cp, a, "cp.ring")
    return (B.collective("bwd.attn.cp.a2a-qkv", "all-to-all", core, size=_a2a(_qkv_width),
                         group="cp.a2a"),)


def hierarchical_sizes(cp: int, tp: int, devices_per_node: int, heads: int,
                       kv_heads: int) -> tuple[int, int]:
    """a2a+p2p's (all-to-all ranks a, ring ranks cp / a): the most CP ranks one node holds
    beside its TP ranks (tp a <= devices per node) whose count divides cp and the ``heads``
    and ``kv_heads`` of a TP rank (Megatron's --hierarchical-context-parallel-sizes a, cp/a)."""
    a = max(n for n in range(1, cp + 1) if cp % n == 0 and tp * n <= devices_per_node
            and heads % n == 0 and kv_heads % n == 0)
    return a, cp // a


def subgroups(par, a: int) -> dict:
    """The process groups of a2a+p2p for :class:`~tpsim.sim.price.Pricing`: ``cp.a2a``, a
    ranks tp apart, and ``cp.ring``, cp / a ranks tp a apart (the CP group's ranks in order)."""
    stride = par.stride("cp")
    return {"cp.a2a": Group("cp", a, stride, 0, par.world),
            "cp.ring": Group("cp", par.cp // a, stride * a, 0, par.world)}


def group_sizes(cp: int, a: int) -> dict:
    """The template's group sizes of context parallelism (a collective on a group of one rank
    is dropped: a2a+p2p with a = 1 is the ring, with a = cp Ulysses)."""
    return {"cp": cp, "cp.a2a": a, "cp.ring": cp // a}


def cp_attention_fwd(B, qkv: str, kernel, cp: int, comm: str, a: int = 1) -> str:
    """The attention core's forward split over ``cp`` ranks by ``comm`` (module docstring);
    ``a``: a2a+p2p's all-to-all ranks."""
    if comm == "a2a+p2p":
        return hierarchical_fwd(B, qkv, kernel, cp, a)
    return {"p2p": p2p_fwd, "all-gather": all_gather_fwd, "a2a": a2a_fwd}[comm](B, qkv, kernel,
                                                                               cp)


def cp_attention_bwd(B, grad, kernel, cp: int, comm: str, a: int = 1) -> tuple:
    """Its backward: the ops the QKV linear's backward waits for."""
    if comm == "a2a+p2p":
        return hierarchical_bwd(B, grad, kernel, cp, a)
    return {"p2p": p2p_bwd, "all-gather": all_gather_bwd, "a2a": a2a_bwd}[comm](B, grad, kernel,
                                                                               cp)
