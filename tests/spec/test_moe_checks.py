"""check_dense: a dense model's layout with an MoE setting changed is refused naming the flag
(it was priced as if unset); an MoE model takes the same settings."""
from __future__ import annotations

import pytest

from tpsim.base.errors import ConfigError
from tpsim.cli import main
from tpsim.spec.layout import Layout
from tpsim.spec.moe_checks import check_dense

SET = [("--moe-dispatcher", dict(moe_dispatcher="flex")),
       ("--moe-imbalance", dict(moe_imbalance=1.25)),
       ("--moe-capacity-factor", dict(moe_capacity_factor=1.0)),
       ("--no-moe-permute-fusion", dict(moe_permute_fusion=False)),
       ("--no-moe-router-fusion", dict(moe_router_fusion=False))]


@pytest.mark.parametrize("flag, kw", SET)
def test_a_dense_model_refuses_each_moe_setting(flag, kw):
    with pytest.raises(ConfigError, match=f"{flag}: expected .* for a dense model"):
        check_dense(Layout(tp=1, **kw), "llama3-8b")


def test_the_defaults_pass():
    assert check_dense(Layout(tp=1), "llama3-8b") is None


def test_the_cli_refuses_on_a_dense_model_and_runs_on_an_moe_one(capsys):
    argv = ["predict", "--tp", "1", "--moe-dispatcher", "allgather", "--seq", "1024"]
    assert main(argv + ["--model", "llama3-8b"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tpsim: error: --moe-dispatcher:") and err.count("\n") == 1
    assert main(argv + ["--model", "mixtral-8x7b", "--ep", "8", "--dp", "8",
                        "--global-batch", "8"]) == 0
