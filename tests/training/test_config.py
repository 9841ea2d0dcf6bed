"""Run configuration: YAML sections, --set overrides, clear errors, the vocabulary follows the tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
from training_helpers import REPO

from hope.config import PRESETS
from hope.training.config import TrainConfig, build_model_config, load_run_config, parse_overrides
from hope.training.tokenizer import ByteTokenizer


def test_unknown_train_key_names_it_and_the_valid_ones(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: {preset: tiny}\ntrain: {max_step: 10}\n")
    with pytest.raises(KeyError, match=r"max_step.*valid keys.*max_steps"):
        load_run_config(path)
    with pytest.raises(KeyError, match=r"lrate.*valid keys.*'lr'"):
        load_run_config(None, ["lrate=1"])


def test_unknown_section_and_model_key(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: {preset: tiny}\noptim: {lr: 1}\n")
    with pytest.raises(KeyError, match=r"optim.*valid sections"):
        load_run_config(path)
    section, _ = load_run_config(None, ["model.preset=tiny", "model.dimm=8"])
    with pytest.raises(KeyError, match=r"dimm.*valid keys"):
        build_model_config(section, 257)


def test_missing_config_file() -> None:
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_run_config("configs/nope.yaml")


def test_types_are_checked_and_yaml_values_parsed() -> None:
    train, model = parse_overrides(["lr=1e-3", "betas=[0.9, 0.99]", "model.cms_chunk_sizes=[8, null]",
                                    "train.compile=true"])
    assert train == {"lr": "1e-3", "betas": [0.9, 0.99], "compile": True}
    assert model == {"cms_chunk_sizes": [8, None]}
    cfg = TrainConfig.from_dict(train)
    assert cfg.lr == 1e-3 and cfg.betas == (0.9, 0.99) and cfg.compile is True
    with pytest.raises(TypeError, match="max_steps.*int"):
        TrainConfig.from_dict({"max_steps": "ten"})
    with pytest.raises(ValueError, match="parallel"):
        TrainConfig.from_dict({"parallel": "tp"})
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["lr"])


def test_vocabulary_follows_the_tokenizer() -> None:
    cfg = build_model_config({"preset": "tiny"}, ByteTokenizer.vocab_size)
    assert cfg.vocab_size == 257 and cfg.name == "tiny"
    assert build_model_config({"preset": "tiny", "vocab_size": 320}, 257).vocab_size == 320  # padded: allowed
    with pytest.raises(ValueError, match=r"vocab_size=256 is smaller than the tokenizer's vocabulary \(257"):
        build_model_config({"preset": "tiny", "vocab_size": 256}, 257)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_has_a_config(name: str) -> None:
    section, cfg = load_run_config(REPO / "configs" / f"{name}.yaml")
    model = build_model_config(section, 32000 if cfg.tokenizer != "byte" else 257)
    assert model.name == name and section == {"preset": name}
    assert cfg.lr > 0 and cfg.max_steps > cfg.warmup_steps
