"""Tokenizers: bytes with a separator, and Hugging Face tokenizers from a local tokenizer.json."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hope.training.tokenizer import ByteTokenizer, build_tokenizer


def test_byte_tokenizer_round_trip_and_separator() -> None:
    tok = build_tokenizer("byte")
    assert isinstance(tok, ByteTokenizer) and tok.vocab_size == 257 and tok.eos_id == 256
    text = "Thou art — ‘fair’."
    ids = tok.encode(text)
    assert max(ids) < 256 and tok.decode([tok.eos_id, *ids]) == text
    nbytes = tok.token_bytes()
    assert nbytes[tok.eos_id] == 0 and int(nbytes.sum()) == 256


def _tokenizer_json(tmp_path: Path, special: list[str]) -> Path:
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token=None))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, special_tokens=special,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["to be or not to be that is the question"] * 20, trainer)
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return path


def test_hf_tokenizer_from_a_local_file(tmp_path: Path) -> None:
    path = _tokenizer_json(tmp_path, ["<|endoftext|>"])
    tok = build_tokenizer(str(tmp_path))  # a directory holding tokenizer.json
    assert tok.eos_id == 0 and tok.vocab_size == build_tokenizer(str(path)).vocab_size
    ids = tok.encode("to be or not")
    assert tok.decode(ids) == "to be or not" and tok.eos_id not in ids
    nbytes = tok.token_bytes()
    assert nbytes[tok.eos_id] == 0 and int(nbytes[torch.tensor(ids)].sum()) == len("to be or not")


def test_hf_tokenizer_without_a_separator_gets_one(tmp_path: Path) -> None:
    _tokenizer_json(tmp_path, [])
    tok = build_tokenizer(str(tmp_path))
    assert tok.eos_id == tok.vocab_size - 1 and tok.decode([tok.eos_id]) == ""


def test_unknown_tokenizer_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("tokenizers")
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        build_tokenizer(str(tmp_path))
    with pytest.raises(ValueError, match="neither 'byte'"):
        build_tokenizer("no-such-org/no-such-tokenizer-xyz")


def test_byte_tokenizer_saves_an_equivalent_hugging_face_tokenizer(tmp_path: Path) -> None:
    """The saved Hugging Face form maps text to the same ids (multi-byte characters included) and decodes
    them back; ``load_saved`` restores the byte tokenizer itself."""
    transformers = pytest.importorskip("transformers")
    from hope.training.tokenizer import load_saved

    ByteTokenizer().save(tmp_path)
    text = "Thou art — ‘fair’.\n\tß 日本 x"
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert hf(text, add_special_tokens=False)["input_ids"] == ByteTokenizer().encode(text)
    assert hf.eos_token_id == 256 and len(hf) == 257 and hf.decode(list(text.encode())) == text
    assert isinstance(load_saved(tmp_path), ByteTokenizer)


def test_hf_tokenizer_save_round_trip_keeps_its_fingerprint(tmp_path: Path) -> None:
    from hope.training.tokenizer import load_saved

    for special in ([], ["<|endoftext|>"]):  # a separator added on load, and one of its own
        src = tmp_path / f"src{len(special)}"
        src.mkdir()
        tok = build_tokenizer(str(_tokenizer_json(src, special)))
        tok.save(tmp_path / f"saved{len(special)}")
        back = load_saved(tmp_path / f"saved{len(special)}")
        assert back.fingerprint() == tok.fingerprint() and back.eos_id == tok.eos_id and back.name == tok.name
        assert back.encode("to be or not") == tok.encode("to be or not")
    assert tok.fingerprint() != ByteTokenizer().fingerprint()
    (tmp_path / "saved1" / "tokenizer.json").write_text((tmp_path / "saved0" / "tokenizer.json").read_text())
    with pytest.raises(ValueError, match="do not match the fingerprint"):
        load_saved(tmp_path / "saved1")
