"""HopeConfig: preset sizes (meta device), validation, file round trips, configs/*.yaml mirror the presets."""

from pathlib import Path

import pytest
import torch

from hope import HopeConfig, HopeLM
from hope.config import PRESETS, fast_state_bytes, nominal_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_parameter_count_matches_its_name(name):
    cfg = HopeConfig.from_name(name)
    with torch.device("meta"):
        n = HopeLM(cfg).num_params()
    nominal = nominal_params(name)
    if nominal is None:
        assert 1e6 <= n <= 3e6, f"{name}: {n / 1e6:.2f}M parameters, expected 1-3M"
    else:
        assert abs(n / nominal - 1) <= 0.05, f"{name}: {n / 1e6:.1f}M parameters vs {nominal / 1e6:.0f}M"
        assert cfg.vocab_size == 32000


def test_matched_families_share_width():
    for size in ("340m", "760m", "1.3b"):
        dims = {HopeConfig.from_name(f"{fam}-{size}").dim for fam in ("hope", "titans", "transformer")}
        assert len(dims) == 1


def test_unknown_key_names_the_key_and_the_valid_ones():
    with pytest.raises(KeyError, match="chunk_mem.*valid keys.*chunk_memory"):
        HopeConfig.from_dict({"chunk_mem": 3})
    with pytest.raises(KeyError, match="unknown preset"):
        HopeConfig.from_name("hope-9b")


@pytest.mark.parametrize("bad", [dict(mixer="rnn"), dict(backend="cuda"), dict(dim=30, n_heads=4),
                                 dict(cms_chunk_sizes=(0,)), dict(alpha_init=1.0), dict(cms_objective="lm")])
def test_invalid_values_are_rejected(bad):
    with pytest.raises(ValueError, match="invalid HopeConfig"):
        HopeConfig(**bad)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_save_load_round_trip(tmp_path, suffix):
    cfg = HopeConfig.from_name("tiny", chunk_memory=8)
    cfg.save(tmp_path / f"c{suffix}")
    assert HopeConfig.load(tmp_path / f"c{suffix}") == cfg


def test_yaml_preset_with_overrides(tmp_path):
    (tmp_path / "x.yaml").write_text("model:\n  preset: tiny\n  dgd: false\ntrain:\n  steps: 3\n")
    cfg = HopeConfig.load(tmp_path / "x.yaml")
    assert cfg == HopeConfig.from_name("tiny", dgd=False)


@pytest.mark.parametrize("name", list(PRESETS))
def test_configs_yaml_mirror_presets(name):
    path = ROOT / "configs" / f"{name}.yaml"
    assert path.exists(), f"configs/{name}.yaml is missing"
    assert HopeConfig.load(path).to_dict() == HopeConfig.from_name(name).to_dict() | {
        "vocab_size": HopeConfig.load(path).vocab_size}


def test_fast_state_analysis_keeps_hope_340m_trainable_on_80gb():
    """DESIGN.md: hope-340m at T=4096, 8 sequences per 80 GB GPU, with per-layer activation checkpointing
    (one layer's chunk states live at a time) and fp32 fast state."""
    cfg = HopeConfig.from_name("hope-340m")
    mem = fast_state_bytes(cfg, 4096)
    per_seq = mem["state"] + mem["chunk_states"]
    assert 8 * per_seq < 40 * 2**30
