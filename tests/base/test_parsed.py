"""Shipped files kept parsed on disk (tpsim.base.parsed): an entry answers only for the exact text
and path it was parsed from, and any trouble with the cache falls back to parsing."""
from __future__ import annotations

import os

import pytest

from tpsim.base import files as schema, parsed
from tpsim.base.errors import ConfigError


@pytest.fixture
def cache(tmp_path, monkeypatch):
    where = tmp_path / "cache"
    monkeypatch.setenv("TPSIM_CACHE_DIR", str(where))
    return where


def test_an_entry_answers_for_its_exact_text_only(tmp_path, cache):
    f = tmp_path / "a.yaml"
    parsed.keep(f, "x: 1\n", {"x": 1})
    assert parsed.kept(f, "x: 1\n") == {"x": 1}
    assert parsed.kept(f, "x: 2\n") is None                    # the file was edited
    assert parsed.kept(tmp_path / "b" / "a.yaml", "x: 1\n") is None   # another file, same name
    assert len(os.listdir(cache)) == 1


def test_a_damaged_or_unwritable_cache_is_parsing_again(tmp_path, cache, monkeypatch):
    f = tmp_path / "a.yaml"
    parsed.keep(f, "x: 1\n", {"x": 1})
    (entry,) = cache.iterdir()
    entry.write_bytes(b"\x00not marshal")
    assert parsed.kept(f, "x: 1\n") is None
    parsed.keep(f, "x: 1\n", {"when": object()})               # marshal cannot hold it
    assert parsed.kept(f, "x: 1\n") is None
    monkeypatch.setenv("TPSIM_CACHE_DIR", "")                  # none kept
    parsed.keep(f, "y: 1\n", {"y": 1})
    assert parsed.kept(f, "y: 1\n") is None


def test_a_shipped_file_is_parsed_once_across_processes(tmp_path, cache, monkeypatch):
    d = tmp_path / "presets"
    d.mkdir()
    f = d / "m.yaml"
    f.write_text("a: 1\nb: [2.5, x]\n")
    assert "m" in schema.shipped_files(d)
    assert schema.load_yaml(f) == {"a": 1, "b": [2.5, "x"]}

    def no_parse(p, text):
        raise AssertionError("parsed again")
    monkeypatch.setattr(schema, "_parse_yaml", no_parse)
    assert schema.load_yaml(f) == {"a": 1, "b": [2.5, "x"]}
    f.write_text("a: 3\n")                                     # edited: parsed afresh
    with pytest.raises(AssertionError):
        schema.load_yaml(f)


def test_a_bad_shipped_file_is_refused_every_time(tmp_path, cache):
    d = tmp_path / "presets"
    d.mkdir()
    f = d / "m.yaml"
    f.write_text("a: 1\na: 2\n")
    schema.shipped_files(d)
    for _ in range(2):
        with pytest.raises(ConfigError, match="each key once"):
            schema.load_yaml(f)
    assert not cache.exists()


def test_other_files_are_not_kept(tmp_path, cache):
    f = tmp_path / "mine.yaml"
    f.write_text("a: 1\n")
    assert schema.load_yaml(f) == {"a": 1}
    assert not cache.exists()


def test_a_process_reading_kept_presets_imports_no_yaml(tmp_path):
    """The second ``tpsim predict`` reads the shipped files' kept copies: PyYAML stays out."""
    import subprocess
    import sys

    from tests.conftest import REPO
    code = ("import sys; from tpsim.cli import main; main(['predict', '--model', 'gpt3', "
            "'--tp', '8', '--json']); print('yaml' in sys.modules, file=sys.stderr)")
    env = {**os.environ, "TPSIM_CACHE_DIR": str(tmp_path / "cache")}
    seen = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           cwd=REPO, env=env, timeout=60).stderr.strip().splitlines()[-1]
            for _ in range(2)]
    assert seen == ["True", "False"]
    kept = [n for n in os.listdir(tmp_path / "cache") if ".yaml." in n]
    assert len(kept) == 2                                      # gpt3 and dgx-h100
