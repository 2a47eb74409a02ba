"""`tpsim collective` as a newcomer drives it: --nccl's releases (good, bad, in a comma list),
the all-to-all's protocols, and the help that explains both."""
from __future__ import annotations

import json

import pytest

from tpsim.cli import main

from tests.integration.test_hardening import fails


@pytest.mark.parametrize("value, bad", [("2.17", "2.17"), ("abc", "abc"), ("2.18,abc", "abc"),
                                        ("2.25,2.99", "2.99")])
def test_an_unknown_nccl_release_is_one_line_naming_the_flag(capsys, value, bad):
    err = fails(capsys, "collective", "--nccl", value, match="--nccl")
    assert repr(bad) in err and "2.18" in err and "2.27" in err


def test_nccl_takes_a_full_version_and_compares_releases(capsys):
    """256 KiB a peer: LL in 2.22-2.27 (up to 512 KiB), Simple in 2.18-2.21 (16 KiB)."""
    assert main(["collective", "--topology", "dgx-b200", "--op", "all-to-all", "--bytes", "2MiB",
                 "--nccl", "v2.21.5-1,2.25.1"]) == 0
    rows = [ln.split() for ln in capsys.readouterr().out.splitlines()[1:]]
    assert [(r[0], r[-2]) for r in rows] == [("2.21", "p2p/simple"), ("2.25", "p2p/ll")]


@pytest.mark.parametrize("proto", ["ll", "LL128"])
def test_all_to_all_refuses_a_forced_ll_saying_what_auto_does(capsys, proto):
    err = fails(capsys, "collective", "--op", "all-to-all", "--bytes", "64KiB", "--protocol", proto,
                match="--protocol: expected auto or simple for the p2p algorithm")
    assert "auto runs LL where NCCL does" in err


@pytest.mark.parametrize("proto, shown", [("auto", "p2p/ll"), ("simple", "p2p/simple")])
def test_all_to_all_protocols_that_run(capsys, proto, shown):
    assert main(["collective", "--op", "all-to-all", "--bytes", "64KiB", "--protocol", proto]) == 0
    assert shown in capsys.readouterr().out


def help_text(capsys, command: str) -> str:
    """`tpsim COMMAND --help`, its lines joined with single spaces."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_help_explains_nccl_and_the_all_to_all_protocol(capsys):
    text = help_text(capsys, "collective")
    assert "p2p LL to 16 KiB a peer in 2.18-2.21 and 2.29-2.30, to 512 KiB a peer in 2.22-2.28" \
        in text
    assert "for all-to-all only auto" in text


def test_json_rows_of_a_release_list_name_their_release(capsys):
    """--nccl 2.21,2.25 --json: each row says which release priced it, as the table's column does."""
    assert main(["collective", "--topology", "dgx-b200", "--op", "all-to-all", "--bytes", "2MiB",
                 "--nccl", "2.21,2.25", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["nccl"], r["protocol"]) for r in rows] == [("2.21", "simple"), ("2.25", "ll")]


def test_op_takes_nccl_tests_and_nccl_names(capsys):
    """all_reduce (nccl-tests' all_reduce_perf), AllToAll (ncclAllToAll), allgather: the same
    collectives as tpsim's names, priced the same; a name of no collective is still refused."""
    assert main(["collective", "--op", "all_reduce,AllToAll,allgather", "--ranks", "8",
                 "--json"]) == 0
    ours = json.loads(capsys.readouterr().out)
    assert main(["collective", "--op", "all-reduce,all-to-all,all-gather", "--ranks", "8",
                 "--json"]) == 0
    assert ours == json.loads(capsys.readouterr().out)
    assert [row["op"] for row in ours] == ["all-reduce", "all-to-all", "all-gather"]
    fails(capsys, "collective", "--op", "gather", match="invalid choice: 'gather'")


def test_the_api_takes_the_names_the_flag_takes():
    """tpsim.collective_time reads nccl-tests' and NCCL's names as --op does (one reader,
    tpsim.cost.collective_ops.op_name), priced the same; another name is refused."""
    import pytest
    import tpsim
    from tpsim.base.errors import TpsimError
    ours = tpsim.collective_time("all-to-all", 2**20, 8, "dgx-h100")
    for name in ("all_to_all", "AllToAll", "alltoall"):
        theirs = tpsim.collective_time(name, 2**20, 8, "dgx-h100")
        assert theirs.op == "all-to-all" and theirs.time_s == ours.time_s
    with pytest.raises(TpsimError, match="one of all-reduce"):
        tpsim.collective_time("gather", 2**20, 8, "dgx-h100")
