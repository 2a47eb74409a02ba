"""check_cp_settings: a context-parallel exchange chosen without context parallelism is
refused naming --cp-comm (at cp 1 it was silently ignored); with cp above 1 each runs."""
from __future__ import annotations

import pytest

from tpsim.base.errors import ConfigError, TpsimError
from tpsim.cli import main
from tpsim.spec.layout import CP_COMMS, Layout


@pytest.mark.parametrize("comm", [c for c in CP_COMMS if c != "p2p"])
def test_a_cp_comm_without_cp_is_refused(comm):
    with pytest.raises(ConfigError, match="--cp-comm: expected p2p .* unless --cp > 1") as e:
        Layout(cp_comm=comm)
    assert isinstance(e.value, TpsimError)
    assert Layout(cp=2, cp_comm=comm).cp_comm == comm


def test_the_cli_refuses_it_in_one_line(capsys):
    assert main(["predict", "--model", "llama3-8b", "--tp", "8", "--cp-comm", "a2a"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tpsim: error: --cp-comm:") and err.count("\n") == 1
