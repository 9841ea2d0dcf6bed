"""Non-finite loss guard: skip a step whose loss or gradient norm is NaN/inf; abort after N in a row."""

from __future__ import annotations

import math


class NonFiniteLossError(RuntimeError):
    """Too many non-finite steps in a row."""


class NonFiniteGuard:
    """``check(loss, grad_norm)`` is True when the step may be applied and counts consecutive bad steps;
    ``abort_if_exhausted(step)`` raises :class:`NonFiniteLossError` once they reach ``max_bad``."""

    def __init__(self, max_bad: int) -> None:
        self.max_bad, self.bad_in_a_row, self.skipped = max_bad, 0, 0

    def check(self, loss: float, grad_norm: float) -> bool:
        if math.isfinite(loss) and math.isfinite(grad_norm):
            self.bad_in_a_row = 0
            return True
        self.bad_in_a_row += 1
        self.skipped += 1
        return False

    def abort_if_exhausted(self, step: int) -> None:
        if self.bad_in_a_row >= self.max_bad:
            raise NonFiniteLossError(f"step {step}: {self.bad_in_a_row} non-finite losses in a row; aborting "
                                     "(lower lr, or check the data and the model's numerics)")

    def state_dict(self) -> dict[str, int]:
        return {"bad_in_a_row": self.bad_in_a_row, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.bad_in_a_row, self.skipped = int(state["bad_in_a_row"]), int(state["skipped"])
