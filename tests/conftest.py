"""Test-wide settings: offline hub/wandb, deterministic seeds."""

import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
# The Triton kernels run on CPU through the interpreter. This must take effect before anything imports triton,
# and transformers >= 5 can import it (through Hugging Face's `kernels`) while other test folders are collected.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
