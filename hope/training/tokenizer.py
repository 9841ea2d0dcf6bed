"""The project's one tokenizer module (training, evaluation, ``hope.hf`` and the CLI tools): a byte-level
tokenizer (default) and any Hugging Face ``tokenizers`` tokenizer.

Both expose ``name`` (the spec it was built from), ``vocab_size``, ``eos_id`` (the document separator, also
the prefix token of empty-context evaluation requests), ``encode``, ``decode``, ``token_bytes()`` (UTF-8
bytes per token, 0 for special tokens; bits per byte), ``fingerprint()`` (equal for tokenizers that map text
to the same ids) and ``save(folder)``. ``save`` writes the spec to ``hope_tokenizer.json`` and the tokenizer
in Hugging Face's format (``tokenizer.json`` + ``tokenizer_config.json``), so a checkpoint carries the exact
tokenizer it was trained with: :func:`load_saved` reads it back, and ``transformers.AutoTokenizer`` loads the
same folder (lm-eval's ``--model hf``). The byte tokenizer is saved as an equivalent byte-level BPE without
merges (id = byte value, ``<|endoftext|>`` = 256); the two differ only on text that contains the literal
string ``<|endoftext|>``, which the Hugging Face form reads as the separator.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Protocol

import torch

SPEC_FILE = "hope_tokenizer.json"
BYTE_SPECS = ("byte", "bytes")  # "bytes" is the evaluation tools' former spelling


class Tokenizer(Protocol):
    name: str
    vocab_size: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def token_bytes(self) -> torch.Tensor: ...

    def fingerprint(self) -> str: ...

    def save(self, folder: str | Path) -> None: ...


def _write_hf_files(tok, eos: str, folder: Path) -> None:
    """``tokenizer.json`` and a ``tokenizer_config.json`` that ``transformers.AutoTokenizer`` reads."""
    tok.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos, "bos_token": None,
              "pad_token": None, "unk_token": None, "clean_up_tokenization_spaces": False,
              "model_max_length": 10**30}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1))


def _write_spec(folder: Path, tok: Tokenizer, kind: str) -> None:
    spec = {"kind": kind, "name": tok.name, "vocab_size": tok.vocab_size, "eos_id": tok.eos_id,
            "fingerprint": tok.fingerprint()}
    (folder / SPEC_FILE).write_text(json.dumps(spec, indent=1))


def _byte_level_tokenizer():
    """A ``tokenizers`` byte-level BPE without merges whose ids are the byte values, plus ``<|endoftext|>``
    = 256: the Hugging Face form of :class:`ByteTokenizer` (GPT-2's byte-to-character map)."""
    from tokenizers import AddedToken, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as _Tok

    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    chars.update({b: chr(256 + i) for i, b in enumerate(b for b in range(256) if b not in chars)})
    tok = _Tok(models.BPE(vocab={chars[b]: b for b in range(256)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True)])
    return tok


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

    def fingerprint(self) -> str:
        return "byte"

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _write_spec(folder, self, "byte")
        try:
            tok = _byte_level_tokenizer()
        except ImportError:  # the Hugging Face copy is a convenience; the spec alone restores this tokenizer
            return
        _write_hf_files(tok, "<|endoftext|>", folder)


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
        self.eos, self.eos_id = eos, self.tok.token_to_id(eos)
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

    def fingerprint(self) -> str:
        """SHA-256 of the tokenizer's full serialization (model, normalizer, pre-tokenizer, added tokens)
        and its separator."""
        return hashlib.sha256(f"{self.tok.to_str()}\n{self.eos_id}".encode()).hexdigest()

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _write_hf_files(self.tok, self.eos, folder)
        _write_spec(folder, self, "hf")


def build_tokenizer(spec: str) -> Tokenizer:
    """``"byte"`` or a Hugging Face tokenizer path / name."""
    return ByteTokenizer() if spec in BYTE_SPECS else HFTokenizer(spec)


def load_saved(folder: str | Path) -> Tokenizer | None:
    """The tokenizer that :meth:`save` wrote into ``folder`` (None when it holds no ``hope_tokenizer.json``);
    raises when the saved files do not reproduce the recorded fingerprint."""
    folder = Path(folder)
    if not (folder / SPEC_FILE).is_file():
        return None
    spec = json.loads((folder / SPEC_FILE).read_text())
    if spec.get("kind") not in ("byte", "hf"):
        raise ValueError(f"{folder / SPEC_FILE}: unknown tokenizer kind {spec.get('kind')!r}")
    tok: Tokenizer = ByteTokenizer() if spec["kind"] == "byte" else HFTokenizer(str(folder))
    if tok.fingerprint() != spec["fingerprint"]:
        raise ValueError(f"{folder}: the saved tokenizer files do not match the fingerprint recorded in "
                         f"{SPEC_FILE} (were they edited or replaced?)")
    tok.name = spec["name"]
    return tok
