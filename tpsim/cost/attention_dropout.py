"""Attention dropout inside a fused (flash) attention kernel: Philox random numbers a score.

A fused kernel never writes the s x s probabilities, so it cannot keep a dropout mask: it draws
one random number per score element in the forward and draws the same ones again in the
backward from the same (seed, offset, row, column) counter. FlashAttention-2
(``csrc/flash_attn/src/dropout.h``, ``philox.cuh``, Dao-AILab/flash-attention commit 0251105)
calls ``philox(seed, (row, col), offset)`` once per 16 elements of a thread's 16 x 32 block of
scores: Philox-4x32 with 7 rounds (6 in the loop, one for the output), 128 random bits, one
byte an element compared with p in 8 bits (``dropout_bits`` b = 8: 128 / b = 16 elements a
draw). Each round is two ``mul.wide.u32`` (a 32 x 32 ->
64-bit product: two integer multiplies, low and high word) and two three-way XORs (one
``LOP3`` each); the key's per-round additions depend only on the seed (hoisted out of the
loop). So a call is ``PHILOX_OPS`` = 7 x (4 + 2) = 42 integer operations, 42 b / 128 an
element.
What the kernel then does with the byte (``MASK_OPS``):

* forward (``flash_fwd_kernel.h``, bf16/fp16 P): widen two bytes to a 16-bit pair (one
  ``PRMT``), ``set.le.u32.f16x2`` against p, ``AND`` the pair of probabilities: 3 operations
  a pair, 1.5 an element;
* backward (``flash_bwd_kernel.h``, ``encode_dropout_in_sign_bit``, fp32 scores): extract the
  byte and compare it (2), negate the dropped score (a select, 1), and dS's pointwise product
  tests that sign (``p >= 0 ? dp - d : d``: a compare and a select beyond the subtraction,
  here 1 more after the conversion's ReLU, which the bf16 conversion does in the same
  instruction): 4 an element.

Those run on the SM's CUDA cores, at the device's INT32 rate (the kernel's ``int32_tops``:
SMs x INT32 lanes an SM x boost clock, NVIDIA's A100 and H100 whitepapers: 64 INT32 lanes an
SM on both; CUDA C++ Programming Guide's arithmetic-instruction throughput table: 64 32-bit
integer multiply-adds, adds and logical operations a clock an SM at compute capability 8.0
and 9.0). Assumed not to overlap the matmuls: FlashAttention-2 draws the numbers in the warps
that then multiply P by V (4 warps a CTA, one CTA an SM at head dim 128: one warp a scheduler,
none other to keep the tensor cores busy meanwhile), so the work adds to the kernel's time:

    t_dropout = elements x (PHILOX_OPS x b / 128 + MASK_OPS[pass]) / int32_rate

``elements``: the score elements the kernel computes, the (query, key) pairs of every head,
causal with its diagonal tiles in full (exec_flops / (4 d), the backward's / (2.5 x 4 d)),
added to the attention's compute term at the kernel's clock
(:func:`tpsim.cost.compute.attention_time`'s ``serial_s``). cuDNN's fused attention on Hopper
(what Transformer Engine runs there, its "composite" SDPA engine: cudnn-frontend cannot yet
combine dropout with the softmax statistics a training forward writes on the unified one,
``fused_attn_f16_arbitrary_seqlen.cu``) is closed; it takes p in steps of 1/16 (pytorch/pytorch
PR #174245: "certain cuDNN SDPA kernels only have a dropout probability resolution of 1/16";
flash-attention PR #2597: "cuDNN requires a multiple of 1/16"), i.e. 4 random bits an element,
b = 4, 32 elements a 128-bit draw, and is otherwise priced as FlashAttention-2's count (its
rounds and masking code unpublished). Checked (no fit) on TransformerEngine issue #3312's H200 timing of
cuDNN's attention with and without dropout (``python bench/attention_dropout_published.py``).
"""
from __future__ import annotations

from .compute import FLASH_BACKWARD_FACTOR, attention_time, listed_attention_kernel

PHILOX_ROUNDS = 7            # philox.cuh: 6 rounds in the loop and one for the output
PHILOX_OPS = PHILOX_ROUNDS * (2 * 2 + 2)   # a round: 2 mul.wide.u32 (lo + hi), 2 LOP3 XORs
PHILOX_BITS = 128            # a Philox-4x32 draw: four 32-bit words
MASK_OPS = {False: 1.5, True: 4.0}   # an element: forward (bf16 pair masks), backward (sign)


def ops_per_element(backward: bool, bits: int = 8) -> float:
    """Integer operations a score element's dropout takes: PHILOX_OPS x bits / PHILOX_BITS +
    MASK_OPS[backward] (module docstring)."""
    return PHILOX_OPS * bits / PHILOX_BITS + MASK_OPS[backward]


def score_elements(exec_flops: float, head_dim: int, backward: bool) -> float:
    """Score elements a fused kernel computes from the FLOPs it executes
    (:func:`tpsim.cost.compute.attention_exec_flops`): 4 d a score in the forward (QK^T, PV),
    2.5 times that in the backward."""
    return exec_flops / (4 * head_dim * (FLASH_BACKWARD_FACTOR if backward else 1.0))


def dropout_time(exec_flops: float, head_dim: int, backward: bool, int32_ops_per_s: float,
                 bits: int = 8) -> float:
    """t_dropout = elements x ops_per_element / int32 rate, at the boost clock (module
    docstring)."""
    elements = score_elements(exec_flops, head_dim, backward)
    return elements * ops_per_element(backward, bits) / int32_ops_per_s


def dropout_attention_time(exec_flops: float, nbytes: float, seq_q: int, seq_kv: int,
                           head_dim: int, device, dtype: str, backward: bool = False,
                           kernel: str | None = None, causal: bool = False) -> float:
    """A fused attention kernel with attention dropout: :func:`tpsim.cost.compute.attention_time`
    with ``serial_s`` = :func:`dropout_time` at the kernel's ``int32_tops`` and
    ``dropout_bits`` (0 where it lists no rate)."""
    k = listed_attention_kernel(device, kernel)
    rate = k.int32_ops_per_s if k is not None else None
    serial = dropout_time(exec_flops, head_dim, backward, rate, k.dropout_bits) if rate else 0.0
    return attention_time(exec_flops, nbytes, seq_q, seq_kv, head_dim, device, dtype, backward,
                          kernel, causal, serial)


__all__ = ["MASK_OPS", "PHILOX_BITS", "PHILOX_OPS", "dropout_attention_time",
           "dropout_time", "ops_per_element", "score_elements"]
