"""rliable aggregates on inputs whose answers are known by hand."""

import warnings

import numpy as np
import pytest

from robocds.eval.aggregate import (
    PROFILE_TAUS,
    improvement_probabilities,
    interval_estimates,
    interval_plot,
    performance_profiles,
    probability_plot,
    profile_plot,
)

# 4 runs x 4 tasks holding 1/16 .. 16/16: the IQM drops the 4 lowest and 4 highest values.
RAMP = np.arange(1, 17, dtype=float).reshape(4, 4) / 16


def test_iqm_and_mean_match_hand_computation():
    est = interval_estimates({"ramp": RAMP}, reps=200)["ramp"]
    assert est["IQM"].point == pytest.approx(np.mean(np.arange(5, 13)) / 16)
    assert est["mean"].point == pytest.approx(8.5 / 16)
    for e in est.values():
        assert e.low <= e.point <= e.high


def test_identical_runs_have_zero_width_intervals():
    flat = np.tile([[0.2, 0.4, 0.6]], (5, 1))
    est = interval_estimates({"flat": flat}, reps=200)["flat"]["mean"]
    assert (est.low, est.point, est.high) == pytest.approx((0.4, 0.4, 0.4))


def test_bootstrap_is_reproducible_by_seed_and_varies_with_it():
    rng = np.random.default_rng(0)
    scores = {"a": rng.uniform(size=(5, 3))}
    assert interval_estimates(scores, seed=1, reps=300) == interval_estimates(scores, seed=1, reps=300)
    assert interval_estimates(scores, seed=1, reps=300) != interval_estimates(scores, seed=2, reps=300)


def test_probability_of_improvement_extremes():
    low, high = np.full((5, 3), 0.2), np.full((4, 3), 0.8)  # different run counts are allowed
    probs = improvement_probabilities(
        {"low": low, "high": high}, [("high", "low"), ("low", "high"), ("low", "low")], reps=200
    )
    assert probs[("high", "low")].point == pytest.approx(1.0)
    assert probs[("low", "high")].point == pytest.approx(0.0)
    assert probs[("low", "low")].point == pytest.approx(0.5)


def test_probability_of_improvement_counts_pairs_of_runs():
    # Task 0: x beats y in 3 of 4 run pairs; task 1: ties everywhere (counted as 0.5 by equality).
    x = np.array([[0.5, 0.3], [0.9, 0.3]])
    y = np.array([[0.4, 0.3], [0.6, 0.3]])
    assert improvement_probabilities({"x": x, "y": y}, [("x", "y")], reps=100)[("x", "y")].point == pytest.approx(
        (3 / 4 + 0.5) / 2
    )


def test_performance_profile_is_the_fraction_above_tau():
    profiles, intervals = performance_profiles({"ramp": RAMP}, reps=100)
    expected = [(RAMP > tau).mean() for tau in PROFILE_TAUS]
    assert np.allclose(profiles["ramp"], expected)
    assert intervals["ramp"].shape == (2, len(PROFILE_TAUS))


@pytest.mark.parametrize(
    "scores, message",
    [
        ({}, "no methods"),
        ({"a": np.zeros(3)}, "expected \\[runs >= 1, tasks >= 1\\]"),
        ({"a": np.full((2, 2), 1.5)}, "in \\[0, 1\\]"),
        ({"a": np.full((2, 2), np.nan)}, "finite"),
        ({"a": np.zeros((2, 2)), "b": np.zeros((2, 3))}, "has 3 tasks"),
    ],
)
def test_bad_scores_are_refused_by_name(scores, message):
    with pytest.raises(ValueError, match=message):
        interval_estimates(scores, reps=10)


def test_unknown_method_in_a_pair_is_named():
    with pytest.raises(ValueError, match="no scores for \\['cds'\\]"):
        improvement_probabilities({"a": RAMP}, [("cds", "a")], reps=10)


def test_plots_are_written(tmp_path):
    scores = {"a": RAMP, "b": RAMP[::-1] * 0.5}
    est = interval_estimates(scores, reps=100)
    probs = improvement_probabilities(scores, [("a", "b")], reps=100)
    profiles, bands = performance_profiles(scores, reps=100)
    for path in (
        interval_plot({"all tasks": est, "first": est}, tmp_path / "intervals.png"),
        probability_plot({"all tasks": probs}, tmp_path / "improvement.png"),
        profile_plot({"all tasks": (profiles, bands), "first": (profiles, bands)}, tmp_path / "profiles.png"),
    ):
        assert path.is_file() and path.stat().st_size > 1000


def test_every_bootstrap_replicate_is_rliables_metric_on_the_same_resample():
    from rliable import metrics

    from robocds.eval.aggregate import improvement_probability, iqm_and_mean, profile, stratified_resample

    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 11, size=(5, 4)) / 10, rng.integers(0, 11, size=(3, 4)) / 10
    xs, ys = stratified_resample(x, 20, rng), stratified_resample(y, 20, rng)
    assert xs.shape == (20, 5, 4) and ys.shape == (20, 3, 4)
    for task in range(4):  # stratified: a task's cells only ever hold that task's runs
        assert set(xs[:, :, task].ravel()) <= set(x[:, task])
    batched, poi, prof = iqm_and_mean(xs), improvement_probability(xs, ys), profile(xs)
    for r in range(20):
        assert batched[r] == pytest.approx([metrics.aggregate_iqm(xs[r]), metrics.aggregate_mean(xs[r])])
        assert poi[r] == pytest.approx(metrics.probability_of_improvement(xs[r], ys[r]))
        assert prof[r] == pytest.approx([(xs[r] > tau).mean() for tau in PROFILE_TAUS])


def test_intervals_agree_with_rliables_own_bootstrap():
    from rliable import library, metrics

    rng = np.random.default_rng(0)
    scores = {"a": rng.uniform(size=(5, 3))}
    ours = interval_estimates(scores, reps=2000)["a"]["IQM"]
    saved = np.random.get_state()
    np.random.seed(0)  # rliable draws its resamples from numpy's global generator
    try:
        with warnings.catch_warnings():  # arch takes the RandomState with a FutureWarning; same draws
            warnings.simplefilter("ignore", FutureWarning)
            _, theirs = library.get_interval_estimates(
                scores, lambda s: np.array([metrics.aggregate_iqm(s)]), reps=2000, random_state=np.random.RandomState(0)
            )
    finally:
        np.random.set_state(saved)
    assert (ours.low, ours.high) == pytest.approx(tuple(theirs["a"][:, 0]), abs=0.03)


def test_a_single_run_gives_points_without_intervals():
    one, two = np.array([[0.2, 0.6]]), np.array([[0.4, 0.6], [0.6, 0.8]])
    est = interval_estimates({"one": one, "two": two}, reps=50)
    assert est["one"]["mean"].point == pytest.approx(0.4) and not est["one"]["mean"].has_interval
    assert est["one"]["mean"].as_dict() == {"point": pytest.approx(0.4)}
    assert est["two"]["mean"].has_interval
    poi = improvement_probabilities({"one": one, "two": two}, [("two", "one")], reps=50)[("two", "one")]
    assert poi.point == pytest.approx((1.0 + 0.75) / 2) and not poi.has_interval


def test_a_methods_interval_does_not_depend_on_the_other_methods():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(size=(5, 3)), rng.uniform(size=(5, 3))
    assert interval_estimates({"a": a}, reps=300)["a"] == interval_estimates({"b": b, "a": a}, reps=300)["a"]
