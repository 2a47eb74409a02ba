"""The all-to-all dispatcher's permutation without Transformer Engine's fused kernels
(tpsim.layer.moe_permute) against closed forms: its kernels' bytes, the host's Python-level
ops it adds, PyTorch's radix passes, and where the setting is refused."""
from __future__ import annotations

import pytest

from tpsim.base.errors import ConfigError
from tpsim.layer.graph import layer_template
from tpsim.layer.moe_ep import Alltoall, alltoall_dims
from tpsim.layer.moe_flex import slot_of
from tpsim.layer.moe_host import CHUNK_SORT_MAP, ROW_ID_MAP
from tpsim.layer.moe_permute import CHUNK_SORT_OPS, DTOH_EXTRA, PERMUTE_OPS, sort_passes
from tpsim.spec.layout import Layout

from .test_moe_ep import toy


def _slot(fused: bool):
    m = toy()
    d = alltoall_dims(m, 1, 2, 1, 2, 128, "bf16", False)
    tpl = layer_template(False, False, blocks=("mlp",), dropout=False, swiglu=True,
                         moe=Alltoall(False, True, False, permute_fusion=fused))
    return d, tpl, dict(zip(tpl.names, tpl.ops(d)))


def test_radix_passes_cover_the_index_bits_eight_at_a_time():
    """ceil(log2 n / 8): 256 keys in one pass, 257 in two, 2^20 (a 4,096 x 256 map) in three."""
    assert [sort_passes(n) for n in (2, 256, 257, 2 ** 16, 2 ** 16 + 1, 2 ** 20)] == \
        [1, 1, 2, 2, 3, 3]


def test_unfused_kernels_move_the_closed_form_bytes():
    """T_n = 256 tokens, top-2, E 8, h 256, bf16: R_1 = 512 rows, n = 2,048 map entries. The
    index_select reads and writes R_1 rows and reads R_1 int64 indices; the argsort 27 n over
    3 kernels; the unpermutation's zeros T_n h B and scatter_add_ (R_1 + 2 T_n) h B."""
    d, _, ops = _slot(False)
    r1, n, h = 256 * 2, 256 * 8, 256
    assert ops["fwd.moe.permute"].nbytes == 2 * r1 * h * 2 + 8 * r1
    assert ops["fwd.moe.permute.map"].nbytes == 2 * n
    argsort = ops["fwd.moe.permute.argsort"]
    assert (argsort.nbytes, argsort.kernels) == (27 * n, 3)
    assert ops["fwd.moe.permute.mod"].nbytes == 16 * r1
    assert ops["fwd.moe.permute.probs.gather"].nbytes == r1 * (8 + 4)
    assert ops["fwd.moe.unpermute.zeros"].nbytes == 256 * h * 2
    assert ops["fwd.moe.unpermute"].nbytes == (r1 + 2 * 256) * h * 2
    assert ops["bwd.moe.unpermute"].nbytes == 2 * r1 * h * 2
    assert ops["bwd.moe.permute"].nbytes == (r1 + 2 * 256) * h * 2
    probs = ops["bwd.moe.permute.probs"]
    assert probs.nbytes == 2 * 32 * r1 + r1 * 12 + 3 * n * 2      # n = 2,048: 11 bits, 2 passes
    assert probs.kernels == 2 * 2 + 3


def test_unfused_path_adds_the_counted_host_ops_and_never_less_gpu_bytes():
    """Forward: the permutation's six ops and the extra device-to-host copy where the fused
    one runs TE's row-id map (3), the sort's split, two .tolist() and cat for tokens and
    probabilities (8) and the unsort's (4) where TE issues a chunk map each, the
    unpermutation's zeros; backward: the zeros and the probabilities' gradient nodes."""
    _, fused, f_ops = _slot(True)
    _, unfused, u_ops = _slot(False)
    fwd = (PERMUTE_OPS + DTOH_EXTRA - 1 - ROW_ID_MAP) + (2 * CHUNK_SORT_OPS - 1 - CHUNK_SORT_MAP) \
        + (CHUNK_SORT_OPS - 1 - CHUNK_SORT_MAP) + 1
    assert unfused.host_ops[0] - fused.host_ops[0] == fwd
    assert unfused.host_ops[1] - fused.host_ops[1] == 2
    assert sum(op.bytes for op in u_ops.values()) > sum(op.bytes for op in f_ops.values())


@pytest.mark.parametrize("settings", [dict(moe_dispatcher="flex"),
                                      dict(moe_dispatcher="allgather")])
def test_unfused_permutation_is_priced_for_the_all_to_all_dispatcher_only(settings):
    with pytest.raises(ConfigError, match="--no-moe-permute-fusion"):
        Layout(moe_permute_fusion=False, **settings)


def test_unfused_permutation_is_refused_for_the_ep_1_slot():
    """Every expert local (EP 1, expert-TP = TP) is the all-gather slot: not priced unfused."""
    assert slot_of("alltoall", "deepep", False, 2, 1, 1, permute_fusion=False).permute_fusion \
        is False
    with pytest.raises(ConfigError, match="--no-moe-permute-fusion"):
        slot_of("alltoall", "deepep", False, 1, 2, 2, permute_fusion=False)


def test_hybridep_permuting_inside_its_kernels_runs_no_sort_or_unsort():
    """``moe_permute_fusion_into_hybridep``: the sort and unsort (forward and backward) move
    no bytes, the other ops unchanged; DeepEP is not affected."""
    from tpsim.layer.moe_flex import Flex
    from .test_moe_flex import ops_of
    copies = ("fwd.moe.sort", "fwd.moe.unsort", "bwd.moe.sort", "bwd.moe.unsort")
    _, apart = ops_of(Flex(False, "hybridep"))
    _, inside = ops_of(Flex(False, "hybridep", permute_into=True))
    assert all(apart[n].nbytes > 0 and inside[n].nbytes == 0 for n in copies)
    assert {n: op for n, op in apart.items() if n not in copies} == \
        {n: op for n, op in inside.items() if n not in copies}
    assert slot_of("flex", "deepep", False, 4, 1, 1, into_hybridep=True).permute_into is False
    with pytest.raises(ConfigError, match="--moe-permute-fusion-into-hybridep"):
        Layout(moe_permute_fusion_into_hybridep=True, moe_dispatcher="flex")
