"""Training data: documents -> tokens -> fixed-length packed sequences, with a deterministic held-out split.

Sources (``TrainConfig.data``): ``"shakespeare"`` (see :mod:`hope.training.shakespeare`), a local file,
directory or glob of ``.txt``/``.md`` (one document per file), ``.jsonl`` (one document per line, field
``text_field``) or ``.parquet`` files, or a Hugging Face dataset name loaded with ``datasets``.

Packing: every document is prefixed with the tokenizer's separator (``eos_id``) and the documents are
concatenated; sequence ``j`` is tokens ``[j*T, (j+1)*T)``. No padding, no loss masking.

Held-out split:
* finite corpora: a document is held out when the first 8 bytes of the SHA-1 of its text, read as a
  fraction, fall below ``val_fraction`` (stable across runs, machines and file order). With fewer than 20
  documents (one big text file) the last ``val_fraction`` of the token stream is held out instead
  (nanoGPT style). Tokens are cached in ``<cache_dir>/tokens/<key>/{train,val}.bin``.
* streaming corpora: the first documents of the stream, up to ``val_tokens`` tokens; training starts
  after them.

Order: :class:`PackedLoader` visits the training sequences in a seeded random permutation per epoch; the
global batch of step ``s`` is a pure function of ``(seed, s)``, so resuming needs only the step, and any
number of processes sees the same global batch. :class:`StreamingLoader` packs documents in stream order
and resumes from a document count plus the partial buffer.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hope.training.config import TrainConfig
from hope.training.tokenizer import Tokenizer

TEXT_SUFFIXES = (".txt", ".md", ".text")
DATA_SUFFIXES = (*TEXT_SUFFIXES, ".jsonl", ".parquet")
MIN_DOCS_FOR_HASH_SPLIT = 20


# ----------------------------------------------------------------------------- documents
def local_files(spec: str) -> list[Path] | None:
    """The files a local ``data`` spec names, or None when it is not a local path (a hub dataset name)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in DATA_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"data directory {spec!r} holds no {'/'.join(DATA_SUFFIXES)} files")
        return files
    if any(c in spec for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise FileNotFoundError(f"data pattern {spec!r} matches no files")
        return files
    if spec.startswith((".", "/", "~")) or path.suffix in DATA_SUFFIXES:
        raise FileNotFoundError(f"data path {spec!r} does not exist")
    return None


def read_file_documents(path: Path, text_field: str) -> Iterator[str]:
    """Documents of one local file."""
    if path.suffix in TEXT_SUFFIXES:
        yield path.read_text(encoding="utf-8", errors="replace")
    elif path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if text_field not in row:
                    raise KeyError(f"{path}:{n}: no field {text_field!r} (fields: {sorted(row)}); "
                                   "set text_field")
                yield row[text_field]
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if text_field not in table.column_names:
            raise KeyError(f"{path}: no column {text_field!r} (columns: {table.column_names}); "
                           "set text_field")
        yield from table.column(text_field).to_pylist()
    else:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r} (expected one of {DATA_SUFFIXES})")


def document_source(cfg: TrainConfig) -> Callable[[], Iterator[str]]:
    """A function returning a fresh iterator over the corpus' documents, in a fixed order."""
    if cfg.data == "shakespeare":
        from hope.training.shakespeare import shakespeare_documents

        return lambda: iter(shakespeare_documents(cfg.cache_dir))
    files = local_files(cfg.data)
    if files is not None:
        return lambda: (doc for f in files for doc in read_file_documents(f, cfg.text_field))
    return lambda: _hub_documents(cfg)


def _hub_documents(cfg: TrainConfig) -> Iterator[str]:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"data={cfg.data!r} is not a local path, and loading it from the Hugging Face hub "
                          "needs `datasets`: pip install 'hope-nl[train]'") from e
    try:
        ds = datasets.load_dataset(cfg.data, cfg.data_config, split=cfg.data_split, streaming=cfg.streaming)
    except Exception as e:
        raise ValueError(f"could not load dataset {cfg.data!r} (config={cfg.data_config!r}, "
                         f"split={cfg.data_split!r}): {e}") from e
    if cfg.streaming:
        ds = ds.shuffle(seed=cfg.seed, buffer_size=10_000)
    for row in ds:
        if cfg.text_field not in row:
            raise KeyError(f"dataset {cfg.data!r} has no field {cfg.text_field!r} (fields: {sorted(row)}); "
                           "set text_field")
        yield row[cfg.text_field]


def is_held_out(text: str, val_fraction: float) -> bool:
    """The stable document-level split: SHA-1 of the text, first 8 bytes as a fraction of 2**64."""
    h = int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big")
    return h < val_fraction * 2**64


# ----------------------------------------------------------------------------- finite corpora
def _token_dtype(vocab_size: int) -> type:
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def _cache_key(cfg: TrainConfig, tokenizer: Tokenizer) -> str:
    files = local_files(cfg.data) if cfg.data != "shakespeare" else None
    fingerprint = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files or []]
    spec = dict(data=cfg.data, config=cfg.data_config, split=cfg.data_split, field=cfg.text_field,
                tokenizer=tokenizer.name, vocab=tokenizer.vocab_size, eos=tokenizer.eos_id,
                val_fraction=cfg.val_fraction, files=fingerprint, version=1)
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def tokenize_split(docs: Iterator[str], tokenizer: Tokenizer, val_fraction: float
                   ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Tokenize and pack ``docs`` into (train tokens, val tokens, stats) with the held-out rule above."""
    dtype = _token_dtype(tokenizer.vocab_size)
    parts: dict[bool, list[np.ndarray]] = {False: [], True: []}
    texts = [d for d in docs if d and d.strip()]
    if not texts:
        return np.zeros(0, dtype), np.zeros(0, dtype), {"documents": 0}
    encode_batch = getattr(tokenizer, "encode_batch", None)
    ids = encode_batch(texts) if encode_batch else [tokenizer.encode(t) for t in texts]
    hash_split = len(texts) >= MIN_DOCS_FOR_HASH_SPLIT
    for text, toks in zip(texts, ids):
        held = hash_split and val_fraction > 0 and is_held_out(text, val_fraction)
        parts[held].append(np.asarray([tokenizer.eos_id, *toks], dtype=dtype))
    train = np.concatenate(parts[False]) if parts[False] else np.zeros(0, dtype)
    val = np.concatenate(parts[True]) if parts[True] else np.zeros(0, dtype)
    if not hash_split and val_fraction > 0:
        cut = len(train) - int(len(train) * val_fraction)
        train, val = train[:cut], train[cut:]
    stats = {"documents": len(texts), "val_documents": len(parts[True]),
             "split": "document-hash" if hash_split else "stream-tail", "train_tokens": int(len(train)),
             "val_tokens": int(len(val)), "bytes": int(sum(len(t.encode("utf-8")) for t in texts))}
    return train, val, stats


def load_corpus(cfg: TrainConfig, tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Tokenized (train, val) token arrays of a finite corpus, prepared once and cached (memory-mapped)."""
    root = Path(cfg.cache_dir).expanduser() / "tokens" / _cache_key(cfg, tokenizer)
    dtype = _token_dtype(tokenizer.vocab_size)
    if not (root / "meta.json").is_file():
        train, val, stats = tokenize_split(document_source(cfg)(), tokenizer, cfg.val_fraction)
        if stats["documents"] == 0:
            raise ValueError(f"data {cfg.data!r} holds no non-empty documents")
        tmp = root.with_name(root.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        train.tofile(tmp / "train.bin")
        val.tofile(tmp / "val.bin")
        meta = {**stats, "data": cfg.data, "tokenizer": tokenizer.name, "dtype": np.dtype(dtype).name}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            tmp.rename(root)
        except OSError:  # another process prepared it first
            shutil.rmtree(tmp, ignore_errors=True)
    meta = json.loads((root / "meta.json").read_text())

    def mm(name: str) -> np.ndarray:
        size = (root / name).stat().st_size
        return np.memmap(root / name, dtype=dtype, mode="r") if size else np.zeros(0, dtype)

    return mm("train.bin"), mm("val.bin"), meta


def check_corpus(train: np.ndarray, val: np.ndarray, cfg: TrainConfig) -> None:
    """Clear errors for corpora too small for the configured sequence length."""
    if len(train) < cfg.seq_len:
        raise ValueError(f"data {cfg.data!r}: the training split has {len(train)} tokens, fewer than one "
                         f"sequence (seq_len={cfg.seq_len}); add data or lower seq_len")
    if cfg.val_fraction > 0 and len(val) < cfg.seq_len:
        raise ValueError(f"data {cfg.data!r}: the held-out split has {len(val)} tokens, fewer than one "
                         f"sequence (seq_len={cfg.seq_len}); raise val_fraction, lower seq_len, or set "
                         "val_fraction=0 to train without evaluation")


class PackedLoader:
    """Global batches of packed sequences from a token array, in a seeded permutation per epoch."""

    def __init__(self, tokens: np.ndarray, seq_len: int, global_batch: int, seed: int) -> None:
        self.tokens, self.seq_len, self.global_batch, self.seed = tokens, seq_len, global_batch, seed
        self.n_seq = len(tokens) // seq_len
        if self.n_seq < 1:
            raise ValueError(f"{len(tokens)} tokens make no sequence of length {seq_len}")
        self.step = 0
        self._perm: tuple[int, torch.Tensor] | None = None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = (epoch, torch.randperm(self.n_seq, generator=g))
        return self._perm[1]

    def sequence(self, j: int) -> torch.Tensor:
        return torch.from_numpy(self.tokens[j * self.seq_len:(j + 1) * self.seq_len].astype(np.int64))

    def batch_at(self, step: int) -> torch.Tensor:
        """The global batch of ``step``: ``(global_batch, seq_len)`` int64."""
        rows = []
        for g in range(step * self.global_batch, (step + 1) * self.global_batch):
            epoch, pos = divmod(g, self.n_seq)
            rows.append(self.sequence(int(self._permutation(epoch)[pos])))
        return torch.stack(rows)

    def next_batch(self) -> torch.Tensor:
        batch = self.batch_at(self.step)
        self.step += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "packed", "step": self.step, "sequences": self.step * self.global_batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "packed":
            raise ValueError(f"data position {state} was written by another kind of loader")
        self.step = int(state["step"])


# ----------------------------------------------------------------------------- streaming corpora
class StreamingLoader:
    """Packs a (possibly endless) document stream in order; resumes from (documents read, partial buffer)."""

    def __init__(self, docs: Callable[[], Iterator[str]], tokenizer: Tokenizer, seq_len: int,
                 global_batch: int, start_doc: int = 0) -> None:
        self.docs, self.tokenizer, self.seq_len, self.global_batch = docs, tokenizer, seq_len, global_batch
        self.start_doc = start_doc
        self.doc_index, self.buffer = start_doc, []
        self._it: Iterator[str] | None = None

    def _iterator(self) -> Iterator[str]:
        if self._it is None:
            it = self.docs()
            for _ in range(self.doc_index):  # skip what earlier runs consumed
                next(it)
            self._it = it
        return self._it

    def next_batch(self) -> torch.Tensor:
        need = self.global_batch * self.seq_len
        while len(self.buffer) < need:
            try:
                text = next(self._iterator())
            except StopIteration:
                if self.doc_index == self.start_doc and not self.buffer:
                    raise ValueError("the data stream holds no training documents") from None
                self._it, self.doc_index = None, self.start_doc  # next epoch
                continue
            self.doc_index += 1
            if text and text.strip():
                self.buffer.extend([self.tokenizer.eos_id, *self.tokenizer.encode(text)])
        batch, self.buffer = self.buffer[:need], self.buffer[need:]
        return torch.tensor(batch, dtype=torch.long).view(self.global_batch, self.seq_len)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "stream", "documents": self.doc_index, "buffer": list(self.buffer)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "stream":
            raise ValueError(f"data position {state} was written by another kind of loader")
        self.doc_index, self.buffer, self._it = int(state["documents"]), list(state["buffer"]), None


def streaming_val(docs: Callable[[], Iterator[str]], tokenizer: Tokenizer, val_tokens: int
                  ) -> tuple[np.ndarray, int]:
    """The held-out head of a stream: (tokens, number of documents it used)."""
    out: list[int] = []
    n = 0
    if val_tokens > 0:
        for n, text in enumerate(docs(), 1):  # noqa: B007
            if text and text.strip():
                out.extend([tokenizer.eos_id, *tokenizer.encode(text)])
            if len(out) >= val_tokens:
                break
    return np.asarray(out, dtype=np.int64), n


# ----------------------------------------------------------------------------- batching helpers
def build_loaders(cfg: TrainConfig, tokenizer: Tokenizer, global_batch: int
                  ) -> tuple[PackedLoader | StreamingLoader, np.ndarray, dict[str, Any]]:
    """(training loader, held-out tokens, corpus stats) for ``cfg``."""
    if cfg.streaming:
        docs = document_source(cfg)
        val, n_val_docs = streaming_val(docs, tokenizer, cfg.val_tokens if cfg.val_fraction > 0 else 0)
        loader = StreamingLoader(docs, tokenizer, cfg.seq_len, global_batch, start_doc=n_val_docs)
        return loader, val, {"split": "stream-head", "val_documents": n_val_docs, "val_tokens": len(val)}
    train, val, meta = load_corpus(cfg, tokenizer)
    check_corpus(train, val, cfg)
    return PackedLoader(train, cfg.seq_len, global_batch, cfg.seed), val, meta


def micro_batches(global_batch: torch.Tensor, rank: int, world: int, micro: int) -> list[torch.Tensor]:
    """This process's micro-batches of a global batch: micro-step ``m`` takes rows
    ``[(m*world + rank)*micro, ... + micro)``, so the union over processes is the global batch."""
    accum = global_batch.shape[0] // (world * micro)
    return [global_batch[(m * world + rank) * micro:(m * world + rank + 1) * micro] for m in range(accum)]


def eval_sequences(val: np.ndarray, seq_len: int, max_tokens: int, rank: int = 0, world: int = 1
                   ) -> torch.Tensor:
    """This process's share of the held-out sequences (the first ``max_tokens`` tokens, in order);
    every process gets the same number of rows."""
    n = min(len(val) // seq_len, max(1, max_tokens // seq_len))
    n -= n % world
    rows = torch.from_numpy(np.asarray(val[:n * seq_len]).astype(np.int64)).view(n, seq_len)
    return rows[rank::world]
