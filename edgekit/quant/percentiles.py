"""Exact tail percentiles of a stream of activations, in one pass and little memory.

Percentile calibration cuts a tiny fraction (1e-5 or less) off each end of every activation's
values over all calibration images. Only the values beyond the cut matter, so instead of a
histogram (two passes: range, then counts) this keeps the ``k`` largest and ``k`` smallest values
seen so far, ``k`` = the cut's share of the values the stream will hold (known up front: images x
values per image). Each update is a comparison against the current k-th value, so it costs about
what a min/max does.
"""
from __future__ import annotations

import math

import numpy as np


class TailPercentiles:
    """The values at ``cut`` (a fraction, e.g. 5e-6) from each end of all values ``update`` is
    given; ``total`` = how many values the stream will have in all."""

    def __init__(self, cut: float, total: int):
        if not 0.0 <= cut < 0.5:
            raise ValueError(f"cut must be in [0, 0.5), got {cut}")
        self.k = max(1, math.ceil(cut * total))
        self._high = self._low = np.empty(0, np.float32)
        # every value beyond these is kept; they only move inwards as values arrive
        self._high_floor, self._low_ceiling = -np.inf, np.inf
        self.count = 0

    def update(self, values: np.ndarray) -> None:
        values = np.asarray(values, np.float32).ravel(order="K")  # a view when memory is dense
        if values.size == 0:
            return
        self.count += values.size
        # Values beyond the running bounds can still be in the tails; values at them cannot
        # (k kept values already reach them).
        floor, ceiling, strict_floor, strict_ceiling = self._high_floor, self._low_ceiling, True, True
        step = values.size // (64 * self.k)
        if step > 1 and (floor == -np.inf or ceiling == np.inf):
            # The k-th largest of a subset is at most the k-th largest of all values: a bound
            # that keeps ~1/64 of a large first batch instead of all of it (ties at it kept).
            # Later batches are cut at the running bounds, the k-th values so far.
            sample = values[::step]
            top = float(np.partition(sample, sample.size - self.k)[sample.size - self.k])
            bottom = float(np.partition(sample, self.k - 1)[self.k - 1])
            if top > floor:
                floor, strict_floor = top, False
            if bottom < ceiling:
                ceiling, strict_ceiling = bottom, False
        high = values[values > floor] if strict_floor else values[values >= floor]
        low = values[values < ceiling] if strict_ceiling else values[values <= ceiling]
        self._high = self._keep(np.concatenate([self._high, high]), top=True)
        self._low = self._keep(np.concatenate([self._low, low]), top=False)
        if self._high.size >= self.k:
            self._high_floor = float(self._high.min())
        if self._low.size >= self.k:
            self._low_ceiling = float(self._low.max())

    def _keep(self, values: np.ndarray, top: bool) -> np.ndarray:
        if values.size <= 4 * self.k:  # prune in bulk: partitioning on every update costs more
            return values
        if top:
            return np.partition(values, values.size - self.k)[values.size - self.k:]
        return np.partition(values, self.k - 1)[:self.k]

    def range(self) -> tuple[float, float]:
        """(low, high): the k-th smallest and the k-th largest value seen (the extremes when
        fewer than k values came)."""
        if self.count == 0:
            raise ValueError("no values seen")
        if self.count < self.k:
            return float(self._low.min()), float(self._high.max())
        high = np.partition(self._high, self._high.size - self.k)[self._high.size - self.k]
        low = np.partition(self._low, self.k - 1)[self.k - 1]
        return float(low), float(high)
