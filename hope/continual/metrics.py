"""Continual-learning metrics as pure functions of the accuracy matrix (see shared/reference/cl_eval.md §2).

``R[i][j]`` is the score on task ``j`` after training through task ``i`` (0-based here, T x T, the upper
triangle being zero-shot scores on future tasks). Higher must be better: pass ``-BPB`` for language modelling.

* ``average_accuracy``: ACC = mean_j R[T-1][j] (Lopez-Paz & Ranzato 2017, GEM).
* ``average_incremental_accuracy``: AIA = mean_k A_k, A_k = mean_{j<=k} R[k][j] (Rebuffi et al. 2017, iCaRL).
* ``backward_transfer``: BWT = mean_{j<T-1} (R[T-1][j] - R[j][j]) (GEM); negative means forgetting.
* ``forward_transfer``: FWT = mean_{j>=1} (R[j-1][j] - b[j]), ``b`` the random-init scores (GEM).
* ``forgetting``: FM = mean_{j<T-1} (max_{l<T-1} R[l][j] - R[T-1][j]) (Chaudhry et al. 2018, RWalk): the
  max-based variant, not Avalanche's first-minus-last (that one is ``-backward_transfer``).
* ``learning_accuracy``: LA = mean_j R[j][j] (Riemer et al. 2019, MER).
* ``intransigence``: I = mean_k (a*_k - R[k][k]) with ``a*_k`` a model trained jointly on tasks 0..k
  (Chaudhry et al. 2018).
* ``retention``: change of held-out bits per byte on a fixed general corpus, after minus before (positive =
  general ability lost).
"""

from __future__ import annotations

from collections.abc import Sequence

Matrix = Sequence[Sequence[float]]


def _check(R: Matrix) -> int:
    T = len(R)
    if T == 0:
        raise ValueError("the accuracy matrix is empty")
    for i, row in enumerate(R):
        if len(row) != T:
            raise ValueError(f"the accuracy matrix must be square (T={T}); row {i} has {len(row)} entries")
    return T


def _need_two(T: int, name: str) -> None:
    if T < 2:
        raise ValueError(f"{name} needs at least two tasks, the accuracy matrix has {T}")


def average_accuracy(R: Matrix) -> float:
    T = _check(R)
    return sum(R[T - 1]) / T


def average_incremental_accuracy(R: Matrix) -> float:
    T = _check(R)
    return sum(sum(R[k][: k + 1]) / (k + 1) for k in range(T)) / T


def backward_transfer(R: Matrix) -> float:
    T = _check(R)
    _need_two(T, "BWT")
    return sum(R[T - 1][j] - R[j][j] for j in range(T - 1)) / (T - 1)


def forward_transfer(R: Matrix, random_init: Sequence[float]) -> float:
    T = _check(R)
    _need_two(T, "FWT")
    if len(random_init) != T:
        raise ValueError(f"FWT needs one random-init score per task ({T}), got {len(random_init)}")
    return sum(R[j - 1][j] - random_init[j] for j in range(1, T)) / (T - 1)


def forgetting(R: Matrix) -> float:
    T = _check(R)
    _need_two(T, "forgetting")
    return sum(max(R[l][j] for l in range(j, T - 1)) - R[T - 1][j] for j in range(T - 1)) / (T - 1)


def learning_accuracy(R: Matrix) -> float:
    T = _check(R)
    return sum(R[j][j] for j in range(T)) / T


def intransigence(R: Matrix, joint: Sequence[float]) -> float:
    T = _check(R)
    if len(joint) != T:
        raise ValueError(f"intransigence needs one joint-training reference per task ({T}), got {len(joint)}")
    return sum(joint[k] - R[k][k] for k in range(T)) / T


def retention(bpb_before: float, bpb_after: float) -> float:
    return bpb_after - bpb_before


def all_metrics(R: Matrix, random_init: Sequence[float] | None = None, joint: Sequence[float] | None = None,
                general_bpb: tuple[float, float] | None = None) -> dict[str, float | None]:
    """Every metric above by name; the ones whose reference is not given (or that need two tasks) are None."""
    T = _check(R)
    two = T >= 2
    return {
        "average_accuracy": average_accuracy(R),
        "average_incremental_accuracy": average_incremental_accuracy(R),
        "bwt": backward_transfer(R) if two else None,
        "fwt": forward_transfer(R, random_init) if two and random_init is not None else None,
        "forgetting": forgetting(R) if two else None,
        "learning_accuracy": learning_accuracy(R),
        "intransigence": intransigence(R, joint) if joint is not None else None,
        "retention_bpb": retention(*general_bpb) if general_bpb is not None else None,
    }


METRIC_NAMES = tuple(all_metrics([[0.0]]))
