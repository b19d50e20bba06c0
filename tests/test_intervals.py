"""The interval estimates of scripts/intervals.py on values whose answer is known."""

import numpy as np
import pytest

from intervals import improvement_ci, iqm, probability_of_improvement, stratified_bootstrap_ci


def test_iqm_drops_the_lowest_and_highest_quarter():
    assert iqm(np.arange(1.0, 9.0)) == 4.5  # mean of 3, 4, 5, 6
    assert iqm(np.array([1.0, 2.0, 3.0, 1000.0])) == 2.5  # an outlier run does not move it
    assert iqm(np.array([5.0, 7.0])) == 6.0  # too few runs to drop any: the mean
    np.testing.assert_array_equal(iqm(np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 100.0]])), [2.5, 6.5])
    stats = pytest.importorskip("scipy.stats")  # the definition rliable uses
    values = np.random.default_rng(0).normal(size=(7, 13))
    np.testing.assert_allclose(iqm(values), stats.trim_mean(values, 0.25, axis=-1))


def test_probability_of_improvement_counts_pairs_and_half_ties():
    assert probability_of_improvement(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert probability_of_improvement(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.5
    assert probability_of_improvement(np.array([2.0]), np.array([1.0, 3.0, 2.0])) == pytest.approx(0.5)
    assert probability_of_improvement(np.array([0.0, 10.0]), np.array([5.0])) == 0.5


def test_bootstrap_intervals_on_known_distributions():
    # two runs 0 and 1: a resample's mean is 0, 1/2 or 1 with probability 1/4, 1/2, 1/4, so the 95% interval is [0, 1]
    assert stratified_bootstrap_ci([np.array([0.0, 1.0])], lambda s: s.mean(-1)) == (0.0, 1.0)
    # stratified: each task keeps its two runs, so constant tasks give a constant pooled IQM (7.5) in every
    # resample; pooled resampling would mix the tasks' runs and spread it
    assert stratified_bootstrap_ci([np.array([5.0, 5.0]), np.array([10.0, 10.0])], iqm) == (7.5, 7.5)
    low, high = stratified_bootstrap_ci([np.array([300.0, 310.0, 320.0]), np.array([900.0, 950.0, 1000.0])], iqm)
    assert low <= iqm(np.array([300.0, 310.0, 320.0, 900.0, 950.0, 1000.0])) <= high
    assert (low, high) == stratified_bootstrap_ci([np.array([300.0, 310.0, 320.0]), np.array([900.0, 950.0, 1000.0])], iqm)
    assert improvement_ci([3.0, 4.0, 5.0], [0.0, 1.0, 2.0]) == (1.0, 1.0)  # every resample: X above Y
    assert improvement_ci([1.0, 2.0], [1.0, 2.0]) == (0.0, 1.0)


def test_one_run_gives_no_interval_not_a_zero_width_one():
    with pytest.raises(ValueError, match="at least 2 runs in every group, got \\[2, 1\\]"):
        stratified_bootstrap_ci([np.array([1.0, 2.0]), np.array([3.0])], iqm)
    with pytest.raises(ValueError, match="got \\[1, 3\\]"):
        improvement_ci([1.0], [0.0, 1.0, 2.0])
