"""Interval estimates for a few runs per algorithm, as defined by Agarwal et al. (NeurIPS 2021, "Deep RL at the
edge of the statistical precipice") and their library rliable: the interquartile mean (IQM), the probability of
improvement, and percentile confidence intervals from a stratified bootstrap (runs resampled within each task).

Every statistic takes arrays whose last axis holds the runs, so that one call evaluates all bootstrap resamples.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

CONFIDENCE = 0.95
REPS = 10_000  # bootstrap resamples; with the fixed seed below, a table is remade to the same digits
# A resample of one run is that run again, so its interval would have zero width: certainty from a single seed.
MIN_RUNS = 2


def enough_runs(groups: Sequence[Sequence[float]]) -> bool:
    """Whether every group (task, or algorithm) has the MIN_RUNS runs a bootstrap interval needs."""
    return min(len(group) for group in groups) >= MIN_RUNS


def check_enough_runs(groups: Sequence[Sequence[float]]) -> None:
    if not enough_runs(groups):
        raise ValueError(f"a bootstrap interval needs at least {MIN_RUNS} runs in every group, "
                         f"got {[len(group) for group in groups]}")


def iqm(scores: np.ndarray) -> np.ndarray:
    """Mean of the middle 50% along the last axis: the lowest and highest int(n / 4) values dropped (what
    scipy.stats.trim_mean(scores, 0.25) and rliable compute)."""
    ordered = np.sort(scores, axis=-1)
    cut = int(0.25 * ordered.shape[-1])
    return ordered[..., cut:ordered.shape[-1] - cut].mean(axis=-1)


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) for a random run X of one algorithm and Y of another (ties count one half): the Mann-Whitney U
    statistic over all n x m pairs, divided by n m."""
    wins = x[..., :, None] > y[..., None, :]
    ties = x[..., :, None] == y[..., None, :]
    return (wins + 0.5 * ties).mean(axis=(-2, -1))


def stratified_bootstrap_ci(strata: Sequence[np.ndarray], statistic: Callable[[np.ndarray], np.ndarray],
                            reps: int = REPS, confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of `statistic` over the pooled runs of all strata (tasks), each resample drawing every
    stratum's runs with replacement and apart from the others, so that each task keeps its number of runs."""
    check_enough_runs(strata)
    rng = np.random.default_rng(seed)
    resampled = [np.asarray(s, float)[rng.integers(0, len(s), size=(reps, len(s)))] for s in strata]
    values = statistic(np.concatenate(resampled, axis=-1))
    low, high = np.percentile(values, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(low), float(high)


def improvement_ci(x: Sequence[float], y: Sequence[float], reps: int = REPS, confidence: float = CONFIDENCE,
                   seed: int = 0) -> tuple[float, float]:
    """Percentile interval of P(X > Y), the runs of X and of Y resampled with replacement, each apart."""
    check_enough_runs([x, y])
    rng = np.random.default_rng(seed)
    x, y = np.asarray(x, float), np.asarray(y, float)
    values = probability_of_improvement(x[rng.integers(0, len(x), size=(reps, len(x)))],
                                        y[rng.integers(0, len(y), size=(reps, len(y)))])
    low, high = np.percentile(values, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(low), float(high)
