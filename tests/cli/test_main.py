"""tpsim.cli.main and the package's import, as the garbage collector sees them: importing tpsim
leaves it as it was (enabled or not, nothing frozen); a `tpsim` process (arguments from
sys.argv) freezes the objects its imports built, a call from Python freezes nothing; the kept
dataclass code (tpsim.base.compiled) serves tpsim's own imports and a `tpsim` process, and
leaves the importing process's dataclasses as it found them."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def _run(code: str) -> list[str]:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stderr.split()


def test_importing_tpsim_leaves_the_collector_as_it_was():
    for before in ("gc.enable()", "gc.disable()"):
        seen = _run(f"import gc, sys; {before}; import tpsim; "
                    "print(gc.isenabled(), gc.get_freeze_count(), file=sys.stderr)")
        assert seen == [str(before == "gc.enable()"), "0"]


def test_only_a_tpsim_process_freezes_its_imports():
    seen = _run("import gc, sys; from tpsim.cli import main; main(['models']); "
                "print(gc.get_freeze_count(), file=sys.stderr); sys.argv = ['tpsim', 'models']; "
                "main(); print(gc.get_freeze_count(), file=sys.stderr)")
    assert seen[0] == "0" and int(seen[1]) > 10_000


def test_the_kept_dataclass_code_is_tpsims_imports_and_its_processes_only():
    seen = _run("import dataclasses, sys; import tpsim; "
                "print(hasattr(dataclasses, 'exec'), file=sys.stderr); "
                "from tpsim.cli import main; sys.argv = ['tpsim', 'models']; main(); "
                "from tpsim.base import compiled; "
                "print(dataclasses.exec is compiled._exec, file=sys.stderr)")
    assert seen == ["False", "True"]
