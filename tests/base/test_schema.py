"""from_mapping's refusal of an unknown key names the file and the key, with the closest known
key, or, for a file of the other kind (a topology given as a model, a model as a topology), the
flag it belongs to."""
from __future__ import annotations

import shutil

import pytest

from tpsim.base.errors import ConfigError
from tpsim.cluster.topology import load_topology, shipped_topologies
from tpsim.spec.model import load_model, shipped_models


def test_a_file_of_the_other_kind_names_its_flag(tmp_path):
    topo, model = tmp_path / "node.yaml", tmp_path / "llama.yaml"
    shutil.copy(shipped_topologies()["dgx-h100"], topo)
    shutil.copy(shipped_models()["llama3-8b"], model)
    with pytest.raises(ConfigError, match=r"node\.yaml: device: .*; this is a topology file: "
                                          r"pass it as --topology$"):
        load_model(topo)
    with pytest.raises(ConfigError, match=r"llama\.yaml: \w+: .*; this is a model file: pass "
                                          r"it as --model$"):
        load_topology(model)


def test_a_misspelled_key_of_the_right_kind_gets_the_closest(tmp_path):
    path = tmp_path / "llama.yaml"
    path.write_text(shipped_models()["llama3-8b"].read_text().replace("\nlayers:", "\nlayrs:"))
    with pytest.raises(ConfigError, match=r"layrs: .*; did you mean layers\?$"):
        load_model(path)


def test_a_hugging_face_hub_id_says_to_download_its_config(tmp_path, monkeypatch):
    """--model meta-llama/Llama-3.1-8B: no such path, and tpsim reads only files, so the error
    names the config.json to download; a path that exists, or one with a file suffix, is read
    (or refused) as the path it is."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^--model: .*download https://huggingface\.co/"
                                          r"meta-llama/Llama-3\.1-8B/blob/main/config\.json"):
        load_model("meta-llama/Llama-3.1-8B")
    with pytest.raises(ConfigError, match=r"^models/x\.yaml: expected a readable YAML file"):
        load_model("models/x.yaml")
    (tmp_path / "Qwen" / "Qwen3-4B").mkdir(parents=True)      # a directory without config.json
    with pytest.raises(ConfigError, match=r"^Qwen/Qwen3-4B: .*a directory must hold config"):
        load_model("Qwen/Qwen3-4B")
