"""Metrics on hand-computed matrices (cl_eval.md §2.3 worked example, values written here)."""

import pytest

from hope.continual import metrics as M

R = [[0.90, 0.30, 0.20], [0.95, 0.85, 0.25], [0.70, 0.75, 0.80]]
B = [0.10, 0.12, 0.15]
JOINT = [0.92, 0.88, 0.83]


def test_worked_example():
    assert M.average_accuracy(R) == pytest.approx(0.75)
    assert M.average_incremental_accuracy(R) == pytest.approx(0.85)  # (0.9 + 0.9 + 0.75) / 3
    assert M.backward_transfer(R) == pytest.approx(-0.15)           # ((0.7-0.9) + (0.75-0.85)) / 2
    assert M.forward_transfer(R, B) == pytest.approx(0.14)          # ((0.3-0.12) + (0.25-0.15)) / 2
    assert M.forgetting(R) == pytest.approx(0.175)                  # ((0.95-0.7) + (0.85-0.75)) / 2
    assert M.learning_accuracy(R) == pytest.approx(0.85)
    assert M.intransigence(R, JOINT) == pytest.approx(0.08 / 3)     # (0.02 + 0.03 + 0.03) / 3
    assert M.retention(1.50, 1.75) == pytest.approx(0.25)


def test_max_based_forgetting_differs_from_first_minus_last():
    # the transient 0.95 in R[1][0] is what separates the max-based FM from -BWT
    assert M.forgetting(R) > -M.backward_transfer(R)
    no_peak = [[0.9, 0.0], [0.6, 0.8]]
    assert M.forgetting(no_peak) == pytest.approx(-M.backward_transfer(no_peak)) == pytest.approx(0.3)


def test_positive_backward_transfer_and_two_tasks():
    R2 = [[0.5, 0.1], [0.7, 0.9]]
    assert M.backward_transfer(R2) == pytest.approx(0.2)
    assert M.forgetting(R2) == pytest.approx(-0.2)
    assert M.forward_transfer(R2, [0.0, 0.05]) == pytest.approx(0.05)
    assert M.average_incremental_accuracy(R2) == pytest.approx((0.5 + 0.8) / 2)


def test_all_metrics_names_and_missing_references():
    out = M.all_metrics(R, B, JOINT, (1.0, 1.2))
    assert set(out) == set(M.METRIC_NAMES)
    assert out["retention_bpb"] == pytest.approx(0.2)
    bare = M.all_metrics(R)
    assert bare["fwt"] is None and bare["intransigence"] is None and bare["retention_bpb"] is None
    one = M.all_metrics([[0.4]])
    assert one["bwt"] is None and one["average_accuracy"] == pytest.approx(0.4)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="square"):
        M.average_accuracy([[0.1, 0.2]])
    with pytest.raises(ValueError, match="empty"):
        M.backward_transfer([])
    with pytest.raises(ValueError, match="two tasks"):
        M.backward_transfer([[0.3]])
    with pytest.raises(ValueError, match="random-init"):
        M.forward_transfer(R, [0.1])
    with pytest.raises(ValueError, match="joint"):
        M.intransigence(R, [0.1, 0.2])


def test_against_avalanche():
    """BWT, first-minus-last forgetting and average accuracy agree with avalanche-lib's metric code, fed the
    matrix the way its plugins feed it (the value after training on a task is its 'initial' value)."""
    metrics = pytest.importorskip("avalanche.evaluation.metrics")
    from avalanche.evaluation.metrics.forgetting_bwt import forgetting_to_bwt

    T = len(R)
    fg = metrics.Forgetting()
    for i in range(T):
        fg.reset_last()  # what its plugin's before_eval does at every evaluation round
        for j in range(T):  # every experience is evaluated after every training experience
            fg.update(j, R[i][j], initial=(i == j))
    per_task = fg.result()  # initial - last for tasks updated at least twice (j < T-1)
    assert set(per_task) == set(range(T - 1))
    mean_fg = sum(per_task.values()) / len(per_task)
    assert -mean_fg == pytest.approx(M.backward_transfer(R))
    bwt = forgetting_to_bwt(per_task)
    assert sum(bwt.values()) / len(bwt) == pytest.approx(M.backward_transfer(R))
    if hasattr(metrics, "BWT"):  # the standalone BWT metric of avalanche >= 0.2
        b = metrics.BWT()
        for i in range(T):
            b.reset_last()
            for j in range(T):
                b.update(j, R[i][j], initial=(i == j))
        assert sum(b.result().values()) / (T - 1) == pytest.approx(M.backward_transfer(R))
    mean = metrics.Mean()
    for v in R[-1]:
        mean.update(v, weight=1)
    assert mean.result() == pytest.approx(M.average_accuracy(R))
    assert mean_fg == pytest.approx(0.15) and M.forgetting(R) == pytest.approx(0.175)  # the two definitions
