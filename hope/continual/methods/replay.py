"""Experience replay with a reservoir buffer (Chaudhry et al. 2019, "On Tiny Episodic Memories in Continual
Learning"; reservoir sampling is Vitter's Algorithm R). Task-free: no boundaries used.

Each step trains on the mean loss over ``batch + replayed`` (the replayed part: ``len(batch)`` examples drawn
without replacement from the buffer), then writes the batch into the buffer with the reservoir rule.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from torch import Tensor

from hope.continual.learner import Learner
from hope.continual.stream import Example


def reservoir_add(buffer: list, item, n_seen: int, capacity: int, rng: random.Random) -> int:
    """Vitter's Algorithm R: ``item`` is the ``n_seen``-th (0-based) element of the stream; every element seen
    so far stays in the buffer with probability ``capacity / (n_seen + 1)``. Returns the new ``n_seen``."""
    if capacity < 1:
        raise ValueError(f"buffer capacity must be positive, got {capacity}")
    if n_seen < capacity:
        buffer.append(item)
    else:
        j = rng.randint(0, n_seen)
        if j < capacity:
            buffer[j] = item
    return n_seen + 1


class Replay(Learner):
    name = "replay"
    stores_examples = True
    state_attrs = ("buffer", "n_seen")

    def __init__(self, model, *, buffer_size: int = 200, **kw) -> None:
        super().__init__(model, **kw)
        self.capacity, self.buffer, self.n_seen = buffer_size, [], 0

    def loss(self, batch: Sequence[Example]) -> Tensor:
        replayed = self.sample(self.buffer, len(batch)) if self.buffer else []
        loss = super().loss(list(batch) + replayed)
        for ex in batch:
            self.n_seen = reservoir_add(self.buffer, ex, self.n_seen, self.capacity, self.rng)
        return loss
