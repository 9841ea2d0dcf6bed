"""Fixtures of the evaluation tests (helpers live in evalhelpers.py: a unique module name)."""

from __future__ import annotations

from evalhelpers import bigram  # noqa: F401  (fixture)
