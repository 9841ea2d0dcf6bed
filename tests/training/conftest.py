"""Training tests run offline: no hub, no W&B network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from training_helpers import OFFLINE, write_corpus

for _k, _v in OFFLINE.items():
    os.environ.setdefault(_k, _v)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A jsonl corpus of 60 short generated documents."""
    return write_corpus(tmp_path / "corpus.jsonl")
