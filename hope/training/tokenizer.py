"""Tokenizers for training: a byte-level one (default) and any Hugging Face tokenizer.

Both expose ``name``, ``vocab_size``, ``eos_id`` (the document separator), ``encode``, ``decode`` and
``token_bytes()`` (UTF-8 bytes per token, 0 for special tokens) used for bits per byte.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch


class Tokenizer(Protocol):
    name: str
    vocab_size: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def token_bytes(self) -> torch.Tensor: ...


class ByteTokenizer:
    """UTF-8 bytes 0..255 plus one document separator (id 256): vocabulary 257."""

    name = "byte"
    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def token_bytes(self) -> torch.Tensor:
        out = torch.ones(self.vocab_size, dtype=torch.long)
        out[self.eos_id] = 0
        return out


class HFTokenizer:
    """A Hugging Face ``tokenizers`` tokenizer: a tokenizer.json file, a directory holding one, or a hub name.

    The document separator is the tokenizer's EOS-like special token (``<|endoftext|>``, ``</s>``, ...);
    when it has none, one is added.
    """

    EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|eos|>", "[SEP]")

    def __init__(self, spec: str) -> None:
        try:
            from tokenizers import Tokenizer as _Tok
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("a Hugging Face tokenizer needs the `tokenizers` package: "
                              "pip install 'hope-nl[train]'") from e
        path = Path(spec).expanduser()
        if path.is_dir():
            path = path / "tokenizer.json"
        if path.is_file():
            self.tok = _Tok.from_file(str(path))
        elif Path(spec).expanduser().exists():
            raise FileNotFoundError(f"tokenizer {spec!r}: no tokenizer.json in that directory")
        else:
            try:
                self.tok = _Tok.from_pretrained(spec)
            except Exception as e:
                raise ValueError(f"tokenizer {spec!r} is neither 'byte', a tokenizer.json file or directory, "
                                 f"nor a loadable Hugging Face hub tokenizer ({e})") from e
        self.name = spec
        vocab = self.tok.get_vocab(with_added_tokens=True)
        eos = next((t for t in self.EOS_CANDIDATES if t in vocab), None)
        if eos is None:
            self.tok.add_special_tokens(["<|endoftext|>"])
            eos = "<|endoftext|>"
        self.eos_id = self.tok.token_to_id(eos)
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)

    def token_bytes(self) -> torch.Tensor:
        """Bytes per token from its decoded text (0 for special tokens), as in nanochat's bits per byte."""
        special = {t.content for t in self.tok.get_added_tokens_decoder().values() if t.special}
        out = torch.zeros(self.vocab_size, dtype=torch.long)
        for i in range(self.vocab_size):
            tok = self.tok.id_to_token(i)
            if tok is None or tok in special:
                continue
            out[i] = len(self.tok.decode([i]).encode("utf-8"))
        return out


def build_tokenizer(spec: str) -> Tokenizer:
    """``"byte"`` or a Hugging Face tokenizer path / name."""
    return ByteTokenizer() if spec == "byte" else HFTokenizer(spec)
