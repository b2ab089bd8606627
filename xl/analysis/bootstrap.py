"""Bootstrap intervals: resample the sentences (or test examples, or seeds) with replacement.

Every model is measured on the *same* resamples (one index array per replicate), so a
difference between models or families is a paired difference and its interval is tight
where the models agree sentence by sentence.
"""
from __future__ import annotations

import numpy as np

from xl.core.errors import XLError

N_BOOT = 200  # replicates: enough for a 95% percentile interval to two digits


def resamples(n: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """(n_boot, n) row indices, each row n draws with replacement from range(n)."""
    if n < 2:
        raise XLError(f"a bootstrap needs at least 2 items to resample, got {n}")
    if n_boot < 1:
        raise XLError(f"n_boot must be at least 1, got {n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def interval(values, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates (NaN replicates ignored)."""
    if not 0 < level < 1:
        raise XLError(f"level is a probability in (0, 1), got {level}")
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(v, [tail, 100 - tail])
    return float(low), float(high)


def basic_interval(estimate: float, values, level: float = 0.95) -> tuple[float, float]:
    """The basic (reverse percentile) interval 2 * estimate - the replicates' percentiles: corrects
    a statistic that resampling itself shifts (CKA rises when resampled sentences repeat, since
    duplicated rows look alike in every language), as the percentile interval does not."""
    low, high = interval(values, level)
    return 2 * estimate - high, 2 * estimate - low
