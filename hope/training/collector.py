"""Python's garbage collector on a step schedule while training (torchtitan's ``gc_freq``).

A training step of the chunked memories creates many thousands of short-lived Python objects (per-chunk tuples
and dicts, tensors, autograd contexts). CPython's automatic collector runs whenever allocations outnumber frees by
a threshold, so it runs many times inside every step, each time walking the young objects, and now and then all of
them. With a schedule, automatic collection is off while training; a young-generation collection runs every
``every`` steps and a full one every ``FULL_EVERY`` of those (and after the first step), so that cycles which
outlived a young collection are freed too. Reference counting frees everything else at once, as before.
"""

from __future__ import annotations

import gc

#: a full collection replaces every FULL_EVERY-th scheduled one
FULL_EVERY = 10


class GarbageCollection:
    """Collect on a schedule: ``every > 0`` turns automatic collection off until :meth:`close` (or the end of a
    ``with`` block) and :meth:`step` collects at steps that are multiples of ``every``; ``every = 0`` changes
    nothing (Python's automatic collection)."""

    def __init__(self, every: int) -> None:
        if every < 0:
            raise ValueError(f"gc_every={every} must be >= 0 (0: Python's automatic collection)")
        self.every, self.collections = every, 0
        self._was_enabled = gc.isenabled()
        if every:
            gc.disable()
            gc.collect()  # start from a clean heap: what the set-up left behind is not collected per step

    def step(self, step: int) -> None:
        """Call after training step ``step`` (counted from 1). The first step, where ``torch.compile`` builds its
        graphs and leaves cyclic garbage behind, is followed by a full collection."""
        if not self.every:
            return
        if step == 1:
            gc.collect()
        elif step % self.every == 0:
            self.collections += 1
            gc.collect(2 if self.collections % FULL_EVERY == 0 else 1)

    def close(self) -> None:
        """Restore automatic collection if it was on before."""
        if self.every and self._was_enabled:
            gc.enable()
        self.every = 0

    def __enter__(self) -> GarbageCollection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
