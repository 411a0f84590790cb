import pytest

from robocds.eval.stats import mean_interval, wilson_interval


def test_wilson_interval_matches_hand_computed_values():
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_interval_rejects_impossible_counts():
    with pytest.raises(ValueError, match="successes=11, trials=10"):
        wilson_interval(11, 10)


def test_mean_interval_uses_student_t_for_few_seeds():
    mean, low, high = mean_interval([0.2, 0.4, 0.6])
    # std 0.2, n 3, t(0.975, 2) = 4.303 -> half width 0.4969
    assert mean == pytest.approx(0.4) and high - mean == pytest.approx(0.4969, abs=1e-3)
    assert mean_interval([0.5]) == (0.5, 0.5, 0.5)
