"""Continual-learning metrics: hand-computed matrices, edge cases, bootstrap, aggregation, CSV."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from nb2_agents.curriculum.metrics import (
    METRIC_KEYS,
    SeedMetrics,
    aggregate,
    auc_gap,
    bootstrap_ci,
    forward_transfer_task,
    matrix_to_csv,
    multitask_metrics,
    normalise_score,
    read_matrix_csv,
    sequential_metrics,
    window_auc,
)

# Rows: after training task i; columns: evaluated task j.
M3 = np.array(
    [
        [0.8, 0.1, 0.0],
        [0.5, 0.9, 0.2],
        [0.4, 0.6, 1.0],
    ]
)


# --------------------------------------------------------------------------- normalise_score


def test_normalise_score_linear_inside_range() -> None:
    assert normalise_score(50.0, 0.0, 100.0) == pytest.approx(0.5)
    assert normalise_score(-150.0, -200.0, -100.0) == pytest.approx(0.5)  # negative reward scale


def test_normalise_score_clips_both_ends() -> None:
    assert normalise_score(-10.0, 0.0, 100.0) == 0.0
    assert normalise_score(250.0, 0.0, 100.0) == 1.0


def test_normalise_score_rejects_degenerate_or_inverted_scale() -> None:
    with pytest.raises(ValueError, match="reference_return"):
        normalise_score(1.0, 5.0, 5.0)
    with pytest.raises(ValueError, match=r"reference_return \(-3\).*random_return \(2\)"):
        normalise_score(0.0, 2.0, -3.0)
    with pytest.raises(ValueError, match="finite"):
        normalise_score(float("nan"), 0.0, 1.0)


# --------------------------------------------------------------------------- window_auc, FT_i


def test_window_auc_is_the_mean_and_rejects_bad_windows() -> None:
    assert window_auc([0.0, 0.5, 1.0]) == pytest.approx(0.5)
    assert window_auc([1.0 + 1e-9]) == 1.0  # float noise is clipped
    with pytest.raises(ValueError, match="empty"):
        window_auc([])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        window_auc([0.2, 1.5])
    with pytest.raises(ValueError, match="NaN"):
        window_auc([0.2, float("nan")])


def test_forward_transfer_task_formula() -> None:
    assert forward_transfer_task(0.7, 0.4) == pytest.approx((0.7 - 0.4) / 0.6)
    assert forward_transfer_task(0.2, 0.6) == pytest.approx((0.2 - 0.6) / 0.4)
    assert forward_transfer_task(0.5, 0.0) == pytest.approx(0.5)


def test_forward_transfer_task_reference_auc_of_one_uses_the_difference() -> None:
    assert forward_transfer_task(1.0, 1.0) == 0.0
    assert forward_transfer_task(0.75, 1.0) == pytest.approx(-0.25)
    assert math.isfinite(forward_transfer_task(0.75, 1.0 - 1e-9))


def test_auc_gap_is_the_plain_difference_where_the_ratio_blows_up() -> None:
    # a reference that learns at once (AUC 0.98) and a run that lags a little: the ratio gives -5
    assert forward_transfer_task(0.88, 0.98) == pytest.approx(-5.0)
    assert auc_gap([0.88, 0.6, 0.3], [0.98, 0.2, None]) == pytest.approx((-0.1 + 0.4) / 2)
    assert auc_gap([0.5], None) is None
    m = sequential_metrics(np.eye(2), [0.88, 0.6], [0.98, 0.2])
    assert m.auc_gap == pytest.approx(0.15)
    assert multitask_metrics([1.0, 1.0], [0.88, 0.6], [0.98, None]).auc_gap == pytest.approx(-0.1)


# --------------------------------------------------------------------------- sequential


def test_three_task_matrix_hand_computed() -> None:
    auc = [0.5, 0.6, 0.3]
    ref = [0.5, 0.2, None]
    m = sequential_metrics(M3, auc, ref)
    # final row 0.4, 0.6, 1.0
    assert m.average_performance == pytest.approx((0.4 + 0.6 + 1.0) / 3)
    # diag 0.8, 0.9, 1.0 -> per-task forgetting 0.4, 0.3, 0.0; mean over all three tasks
    assert m.per_task_forgetting == pytest.approx([0.4, 0.3, 0.0])
    assert m.forgetting == pytest.approx(0.7 / 3)
    # BWT over the first two tasks only
    assert m.backward_transfer == pytest.approx(((0.4 - 0.8) + (0.6 - 0.9)) / 2)
    # FT: task 0 -> 0, task 1 -> (0.6-0.2)/0.8 = 0.5, task 2 has no reference
    assert m.per_task_forward_transfer[0] == pytest.approx(0.0)
    assert m.per_task_forward_transfer[1] == pytest.approx(0.5)
    assert m.per_task_forward_transfer[2] is None
    assert m.forward_transfer == pytest.approx(0.25)


def test_single_task() -> None:
    m = sequential_metrics(np.array([[0.7]]), [0.4], [0.2])
    assert m.average_performance == pytest.approx(0.7)
    assert m.forgetting == 0.0
    assert m.backward_transfer is None
    assert m.forward_transfer == pytest.approx((0.4 - 0.2) / 0.8)


def test_task_never_learned() -> None:
    matrix = np.array([[0.9, 0.0], [0.6, 0.0]])
    m = sequential_metrics(matrix, auc=[0.5, 0.0], ref_auc=[0.5, 0.4])
    assert m.per_task_forgetting == pytest.approx([0.3, 0.0])
    assert m.forgetting == pytest.approx(0.15)
    assert m.per_task_forward_transfer[1] == pytest.approx((0.0 - 0.4) / 0.6)
    assert m.forward_transfer == pytest.approx(((0.0 - 0.4) / 0.6) / 2)
    assert m.average_performance == pytest.approx(0.3)


def test_reference_auc_of_exactly_one() -> None:
    m = sequential_metrics(np.eye(2), auc=[0.8, 1.0], ref_auc=[1.0, 1.0])
    assert m.per_task_forward_transfer == pytest.approx([-0.2, 0.0])
    assert m.forward_transfer == pytest.approx(-0.1)


def test_no_references_means_no_forward_transfer() -> None:
    assert sequential_metrics(M3, [0.5, 0.5, 0.5]).forward_transfer is None
    m = sequential_metrics(M3, [0.5, 0.5, 0.5], [float("nan"), None, float("nan")])
    assert m.forward_transfer is None
    assert m.per_task_forward_transfer == [None, None, None]


@pytest.mark.parametrize(
    ("matrix", "auc", "ref", "match"),
    [
        (np.zeros((2, 3)), [0.0, 0.0], None, "square"),
        (np.zeros((0, 0)), [], None, "square"),
        (np.array([[0.5, np.nan], [0.5, 0.5]]), [0.0, 0.0], None, "NaN"),
        (np.array([[0.5, 1.2], [0.5, 0.5]]), [0.0, 0.0], None, r"\[0, 1\]"),
        (np.eye(2), [0.0], None, "auc"),
        (np.eye(2), [0.0, 0.0], [0.1], "ref_auc"),
        (np.eye(2), [0.0, 0.0], [0.1, -0.5], "ref_auc"),
    ],
)
def test_sequential_metrics_validates(matrix: np.ndarray, auc: list, ref: list | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sequential_metrics(matrix, auc, ref)


def test_to_dict_is_json_ready() -> None:
    d = sequential_metrics(M3, [0.5, 0.6, 0.3], [0.5, 0.2, None]).to_dict()
    assert set(d) >= set(METRIC_KEYS) | {"per_task_forgetting", "per_task_forward_transfer"}
    assert json.loads(json.dumps(d)) == d


# --------------------------------------------------------------------------- multitask


def test_multitask_metrics() -> None:
    m = multitask_metrics([0.9, 0.5], auc=[0.6, 0.3], ref_auc=[0.2, None])
    assert m.average_performance == pytest.approx(0.7)
    assert m.forgetting is None
    assert m.backward_transfer is None
    assert m.per_task_forgetting == [None, None]
    assert m.per_task_forward_transfer == [pytest.approx(0.5), None]
    assert m.forward_transfer == pytest.approx(0.5)
    assert multitask_metrics([0.9, 0.5], auc=[0.6, 0.3]).forward_transfer is None
    with pytest.raises(ValueError, match="auc"):
        multitask_metrics([0.9, 0.5], auc=[0.6])
    with pytest.raises(ValueError, match="final_scores"):
        multitask_metrics([], auc=[])


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_single_value() -> None:
    assert bootstrap_ci([0.42]) == (0.42, 0.42, 0.42)


def test_bootstrap_identical_values() -> None:
    mean, low, high = bootstrap_ci([0.3, 0.3, 0.3, 0.3])
    assert mean == pytest.approx(0.3)
    assert low == pytest.approx(0.3) and high == pytest.approx(0.3)
    assert low <= mean <= high


def test_bootstrap_three_values_deterministic() -> None:
    values = [0.2, 0.5, 0.9]
    mean, low, high = bootstrap_ci(values, seed=3)
    assert mean == pytest.approx(np.mean(values))
    assert min(values) <= low <= mean <= high <= max(values)
    assert low < high
    assert bootstrap_ci(values, seed=3) == (mean, low, high)
    narrow = bootstrap_ci(values, confidence=0.5, seed=3)
    assert low <= narrow[1] <= narrow[2] <= high


def test_bootstrap_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([0.1, 0.2], confidence=1.0)
    with pytest.raises(ValueError, match="finite"):
        bootstrap_ci([0.1, float("nan")])


# --------------------------------------------------------------------------- aggregate


def _seed(avg: float, fgt: float | None, ft: float | None, bwt: float | None) -> SeedMetrics:
    return SeedMetrics(avg, fgt, ft, bwt, per_task_forgetting=[], per_task_forward_transfer=[])


def test_aggregate_skips_none() -> None:
    per_seed = [_seed(0.5, 0.1, None, None), _seed(0.7, 0.3, 0.2, None), _seed(0.9, 0.2, None, None)]
    out = aggregate(per_seed, seeds=[0, 1, 2])
    assert list(out) == list(METRIC_KEYS)

    avg = out["average_performance"]
    assert avg["n"] == 3
    assert avg["mean"] == pytest.approx(0.7)
    assert avg["ci_low"] <= avg["mean"] <= avg["ci_high"]
    assert [e["seed"] for e in avg["per_seed"]] == [0, 1, 2]

    ft = out["forward_transfer"]
    assert ft["n"] == 1
    assert (ft["mean"], ft["ci_low"], ft["ci_high"]) == pytest.approx((0.2, 0.2, 0.2))
    assert [e["value"] for e in ft["per_seed"]] == [None, 0.2, None]

    bwt = out["backward_transfer"]
    assert bwt == {
        "mean": None,
        "ci_low": None,
        "ci_high": None,
        "per_seed": [{"seed": s, "value": None} for s in (0, 1, 2)],
        "n": 0,
    }
    assert json.loads(json.dumps(out)) == out


def test_aggregate_validates_seeds() -> None:
    with pytest.raises(ValueError, match="seed"):
        aggregate([_seed(0.5, 0.1, None, None)], seeds=[0, 1])
    with pytest.raises(ValueError, match="unique"):
        aggregate([_seed(0.5, 0.1, None, None)] * 2, seeds=[4, 4])


# --------------------------------------------------------------------------- CSV


def test_matrix_csv_round_trip(tmp_path: Path) -> None:
    names = ["reach", "push,v2", "pick-place"]
    path = tmp_path / "perf" / "matrix.csv"
    matrix_to_csv(M3 + 1e-5, names, path)
    lines = path.read_text().splitlines()
    assert lines[0] == 'after_task,reach,"push,v2",pick-place'
    assert lines[1] == "reach,0.8000,0.1000,0.0000"
    read_names, matrix = read_matrix_csv(path)
    assert read_names == names
    np.testing.assert_allclose(matrix, M3, atol=1e-4)
    assert [p.name for p in path.parent.iterdir()] == ["matrix.csv"]  # no temp file left behind


def test_matrix_csv_partial_rows_and_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "matrix.csv"
    matrix_to_csv(M3, ["a", "b", "c"], path)
    matrix_to_csv(M3[:2], ["a", "b", "c"], path)
    names, matrix = read_matrix_csv(path)
    assert names == ["a", "b", "c"]
    assert matrix.shape == (2, 3)


def test_matrix_csv_validates(tmp_path: Path) -> None:
    path = tmp_path / "matrix.csv"
    with pytest.raises(ValueError, match="column per task"):
        matrix_to_csv(M3, ["a", "b"], path)
    with pytest.raises(ValueError, match="unique"):
        matrix_to_csv(M3, ["a", "a", "b"], path)
    with pytest.raises(ValueError, match="NaN"):
        matrix_to_csv(np.full((1, 1), np.nan), ["a"], path)
    assert not path.exists()
    path.write_text("task,a\na,0.5\n")
    with pytest.raises(ValueError, match="after_task"):
        read_matrix_csv(path)
    path.write_text("after_task,a,b\nb,0.5,0.1\n")
    with pytest.raises(ValueError, match="labelled"):
        read_matrix_csv(path)
