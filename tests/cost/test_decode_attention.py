"""Decode attention: bytes at the elementwise rate plus the attention kernel's fixed decode time."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.cluster.topology import load_topology
from tpsim.cost.compute import decode_attention_time, elementwise_time

H100 = load_topology("dgx-h100").device
A100 = load_topology("dgx-a100").device
L40S = load_topology("pcie-l40s").device   # lists no attention kernel


@settings(max_examples=30, deadline=None)
@given(st.floats(1e3, 1e10))
def test_fixed_part_is_the_kernels_decode_fixed_time(nbytes):
    """t = elementwise_time(bytes) + decode_fixed of the device's kernel; 0 where none."""
    fixed = H100.attention_kernels[H100.attention_kernel].decode_fixed_s
    assert fixed > 0
    assert decode_attention_time(nbytes, H100) == pytest.approx(
        elementwise_time(nbytes, H100) + fixed, rel=1e-12)
    assert decode_attention_time(nbytes, L40S) == elementwise_time(nbytes, L40S)


@pytest.mark.parametrize("seq, measured_us", [(1024, 12.3), (2048, 14.2), (4096, 15.9),
                                              (8192, 18.8), (16384, 25.1)])
def test_flashinfer_batch_one_decode_on_hopper(seq, measured_us):
    """FlashInfer's batch-1 decode, Qwen2.5-32B at TP 2 (20 query and 4 KV heads of 128,
    bf16; vllm-project/flash-attention PR 63), the timings decode_fixed_us is fitted on:
    within 10% at every length (the byte term alone was 3.8-15.5 us, 69% short at 1k)."""
    nbytes = 2 * 20 * 128 * 2 + 2 * seq * 4 * 128 * 2
    assert decode_attention_time(nbytes, H100) * 1e6 == pytest.approx(measured_us, rel=0.10)


@pytest.mark.parametrize("seq, measured_us", [(1024, 17.0), (2048, 17.0), (3072, 17.0),
                                              (4032, 18.0)])
def test_flash_attention_2_batch_one_decode_on_a100(seq, measured_us):
    """FlashAttention-2's paged decode (flash_attn_with_kvcache) on A100, batch 1,
    Llama-2-70B at TP 2 (32 query and 4 KV heads of 128; microsoft/vidur
    data/profiling/a100/attention.csv, the GPU kernel time, so without the launch gap), the
    timings the A100 decode_fixed_us is fitted on: within 10% at every length (the byte
    term alone was 1.3-5.1 us, 92% short at 1k)."""
    nbytes = 2 * 32 * 128 * 2 + 2 * seq * 4 * 128 * 2
    kernel_s = decode_attention_time(nbytes, A100) - A100.kernel_launch_s
    assert kernel_s * 1e6 == pytest.approx(measured_us, rel=0.10)


@pytest.mark.parametrize("seq, utilization", [(1024, 0.606), (2048, 0.736), (4096, 0.827),
                                              (8192, 0.888)])
def test_flashinfer_batch_64_gqa_decode_on_h100(seq, utilization):
    """FlashInfer's batched GQA decode on its tensor cores (what SGLang runs for 8 query heads
    per KV head), H100 SXM, batch 64 of equal lengths, Llama-2-70B at TP 2 (32 query and 4
    KV heads of 128, fp16, paged): its bandwidth utilization, bytes / time / 3,352 GB/s, read
    off Figure 9 of flashinfer.ai's "Accelerating Self-Attentions for LLM Serving with
    FlashInfer" (2024-02-02; assets/imgs/batch-gqa-benchmark.png, +-1 point). Used in no fit:
    tpsim's time is within 15% at every length, and never short by more than 6% (-5% at 1k,
    +15% at 8k: the kernel reaches 89% of the peak where tpsim's rate is 80%)."""
    nbytes = 64 * (2 * 32 * 128 * 2 + 2 * seq * 4 * 128 * 2)
    measured_s = nbytes / (utilization * 3.352e12)
    tpsim_s = decode_attention_time(nbytes, H100)
    assert tpsim_s == pytest.approx(measured_s, rel=0.15)
    assert tpsim_s > 0.94 * measured_s


@pytest.mark.parametrize("batch, measured_us", [(18, 80.0), (27, 99.0), (28, 133.0),
                                                (54, 181.0), (55, 241.0), (64, 281.0),
                                                (93, 308.0)])
def test_flash_attention_2_batched_decode_on_a100(batch, measured_us):
    """FlashAttention-2's paged decode on A100 at batch 18-93, 2,688 cached tokens each
    (Llama-2-70B at TP 2, 16-token blocks; microsoft/vidur data/profiling/a100/attention.csv,
    commit e2d00e9, the median GPU kernel time; only its batch-1 rows are fitted). One CTA
    per sequence and KV head, two resident per SM (216 on 108 SMs): the time jumps where
    the CTAs pass 108 and 216 (batch 28, 55), a wave sawtooth of -18% to +9% about tpsim's
    bytes at 80% of the peak, which holds no waves: within 20% at every batch."""
    nbytes = batch * (2 * 32 * 128 * 2 + 2 * 2688 * 4 * 128 * 2)
    kernel_s = decode_attention_time(nbytes, A100) - A100.kernel_launch_s
    assert kernel_s * 1e6 == pytest.approx(measured_us, rel=0.20)


H200 = load_topology("dgx-h200").device


@pytest.mark.parametrize("seq, utilization", [(1024, 0.421), (2048, 0.475), (4096, 0.499),
                                              (8192, 0.507)])
def test_flashinfer_cuda_core_gqa_decode_on_h100(seq, utilization):
    """FlashInfer's CUDA-core batch decode (what FlashInfer <= 0.1.6 runs for 8 query heads per
    KV head, and SGLang v0.3-v0.4.1 with it), H100 SXM, batch 64, Llama-2-70B at TP 2: its
    bandwidth utilization read off Figure 9 of flashinfer.ai's 2024-02-02 blog ("FlashInfer
    CUDA Cores"), the points cuda_core_decode_GBps is FITTED on: within 5% at every length
    (the memory's rate alone, the tensor-core price, is 33-35% short)."""
    nbytes = 64 * (2 * 32 * 128 * 2 + 2 * seq * 4 * 128 * 2)
    measured_s = nbytes / (utilization * 3.352e12)
    assert decode_attention_time(nbytes, H100, 8) == pytest.approx(measured_s, rel=0.05)
    assert decode_attention_time(nbytes, H100) < 0.67 * measured_s


@settings(max_examples=30, deadline=None)
@given(st.floats(1e6, 1e10), st.sampled_from([1, 2, 4, 8]))
def test_cuda_core_decode_is_the_slower_of_memory_and_cores(nbytes, g):
    """t = max(elementwise_time(bytes), launch + bytes g / (8 R8)) + decode_fixed: never faster
    than the memory-bound kernel, the cores' term linear in the group size; a device listing
    no R8 prices the kernel as the memory-bound one."""
    kernel = H100.attention_kernels[H100.attention_kernel]
    cores = H100.kernel_launch_s + nbytes * g / (8 * kernel.cuda_core_decode_Bps)
    expected = max(elementwise_time(nbytes, H100), cores) + kernel.decode_fixed_s
    assert decode_attention_time(nbytes, H100, g) == pytest.approx(expected, rel=1e-12)
    assert decode_attention_time(nbytes, H100, g) >= decode_attention_time(nbytes, H100)
    assert decode_attention_time(nbytes, L40S, g) == decode_attention_time(nbytes, L40S)


def test_cuda_core_decode_rate_is_the_dies_not_the_memorys():
    """The H200 (the H100's GH100 die, 43% more bandwidth) reads a large cache with the CUDA-core
    kernel at 8 query heads no faster than the H100: its cores bound it on both; at 1 head
    (multi-head attention) the H200's memory sets the rate."""
    nbytes = 4e9
    assert decode_attention_time(nbytes, H200, 8) == pytest.approx(
        decode_attention_time(nbytes, H100, 8), rel=1e-9)
    assert decode_attention_time(nbytes, H200, 1) < 0.75 * decode_attention_time(nbytes, H100, 1)
