"""Frames -> model input with OpenCV, giving exactly what ``Preprocessing.apply`` (Pillow) gives.

OpenCV has no resize that matches Pillow's: Pillow's BILINEAR/BICUBIC *downscale* with a filter
widened by the scale factor (antialiased), while ``cv2.resize`` INTER_LINEAR samples 2 pixels and
INTER_AREA averages boxes (both differ by tens of levels on real frames). So this module computes
Pillow's own filter taps (``Resample.c``: same centres, supports, per-output normalisation, 22-bit
fixed-point coefficients, int32 accumulation and uint8 rounding between the two passes) once per
frame size, and applies them with OpenCV transposes and numpy gathers. The pixels are bit-exact;
the float scaling differs from ``Preprocessing.normalize`` by float32 rounding only.

Which pass runs first matters (the uint8 rounding in between) and changed across Pillow releases,
so it is asked of the installed Pillow once per frame size.

Frames stay BGR until the end: resampling is per channel, so the channel swap is folded into the
normalisation (no full-frame ``cvtColor``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..preprocessing import Preprocessing

PRECISION_BITS = 22  # Pillow's fixed point for 8-bit images: 32 - 8 - 2


def _bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


FILTERS = {"bilinear": (_bilinear, 1.0), "bicubic": (_bicubic, 2.0)}


@dataclass(frozen=True)
class AxisPlan:
    """Resampling along one axis: ``out[j] = sum_t weights[t][j] * in[index[t][j]]``."""

    index: tuple[np.ndarray, ...]  # per tap, (n_out,) source positions
    weights: tuple[np.ndarray, ...] | None  # per tap, (n_out, 1) int32 (22-bit fixed point); None: a gather
    negative: bool = False  # some weights < 0 (bicubic): results need clipping to [0, 255]

    @classmethod
    def pillow(cls, in_size: int, out_size: int, interpolation: str) -> "AxisPlan":
        """Pillow's taps for resizing ``in_size`` pixels to ``out_size`` (``precompute_coeffs``)."""
        scale = in_size / out_size
        if interpolation == "nearest":  # Pillow resizes NEAREST with an affine transform
            idx = np.minimum(((np.arange(out_size) + 0.5) * scale).astype(np.int64), in_size - 1)
            return cls((idx,), None)
        try:
            filt, base_support = FILTERS[interpolation]
        except KeyError:
            raise ValueError(f"unsupported interpolation {interpolation!r}") from None
        filterscale = max(scale, 1.0)
        support = base_support * filterscale
        ksize = int(math.ceil(support)) * 2 + 1
        index = np.zeros((ksize, out_size), np.int64)
        coeff = np.zeros((ksize, out_size), np.float64)
        for j in range(out_size):
            center = (j + 0.5) * scale
            xmin = max(int(center - support + 0.5), 0)
            xmax = min(int(center + support + 0.5), in_size) - xmin
            w = filt((np.arange(xmax) + xmin - center + 0.5) * (1.0 / filterscale))
            total = w.sum()
            if total != 0.0:
                w = w / total
            coeff[:xmax, j] = w
            index[:, j] = np.minimum(xmin + np.arange(ksize), in_size - 1)
        one = 1 << PRECISION_BITS  # Pillow rounds each coefficient to 22-bit fixed point
        fixed = np.where(coeff < 0, np.trunc(-0.5 + coeff * one), np.trunc(0.5 + coeff * one))
        fixed = fixed.astype(np.int32)
        taps = [t for t in range(ksize) if fixed[t].any()]
        return cls(tuple(index[t] for t in taps), tuple(fixed[t][:, None] for t in taps),
                   bool((fixed < 0).any()))

    def crop(self, start: int, size: int) -> "AxisPlan":
        sl = slice(start, start + size)
        return AxisPlan(tuple(i[sl] for i in self.index),
                        None if self.weights is None else tuple(w[sl] for w in self.weights),
                        self.negative)

    def apply(self, rows: np.ndarray, block: int = 48) -> np.ndarray:
        """Resample axis 0 of a 2-D uint8 array in Pillow's int32 fixed point (bit-exact).

        Works on blocks of output rows so the int32 accumulators stay in cache."""
        if self.weights is None:
            return rows[self.index[0]]
        n, m = len(self.index[0]), rows.shape[1]
        out = np.empty((n, m), np.uint8)
        acc_buf = np.empty((min(block, n), m), np.int32)
        tmp_buf = np.empty_like(acc_buf)
        for j0 in range(0, n, block):
            j1 = min(n, j0 + block)
            acc, tmp = acc_buf[:j1 - j0], tmp_buf[:j1 - j0]
            np.multiply(rows[self.index[0][j0:j1]], self.weights[0][j0:j1], out=acc, dtype=np.int32)
            for idx, w in zip(self.index[1:], self.weights[1:]):
                np.multiply(rows[idx[j0:j1]], w[j0:j1], out=tmp, dtype=np.int32)
                acc += tmp
            acc += 1 << (PRECISION_BITS - 1)
            acc >>= PRECISION_BITS
            if self.negative:  # bicubic lobes can overshoot [0, 255]
                np.clip(acc, 0, 255, out=acc)
            out[j0:j1] = acc
        return out


class FramePreprocessor:
    """BGR uint8 frame -> float32 model input, as ``preprocessing.apply(rgb)`` would give."""

    def __init__(self, preprocessing: Preprocessing):
        self.pre = preprocessing
        self._plans: dict[tuple[int, int], _Plan] = {}
        std = np.asarray(preprocessing.std, np.float64)
        mean = np.asarray(preprocessing.mean, np.float64)
        scale = (1.0 / (255.0 * std)).astype(np.float32)
        bias = (-mean / std).astype(np.float32)
        # Values are computed in R, G, B order (mean/std name R, G, B); a "BGR" model gets them
        # reversed afterwards, as Preprocessing.normalize does.
        self._rgb_input = preprocessing.channel_order != "BGR"
        self._scale, self._bias = scale, bias

    def _plan(self, h: int, w: int) -> "_Plan":
        key = (h, w)
        if key not in self._plans:
            self._plans[key] = _Plan.make(self.pre, h, w)
        return self._plans[key]

    def geometry(self, frame: np.ndarray) -> np.ndarray:
        """Resize/crop an HxWx3 uint8 frame to size x size (channel order unchanged)."""
        h, w = frame.shape[:2]
        return self._plan(h, w).run(np.ascontiguousarray(frame))

    def normalize(self, pixels_bgr: np.ndarray) -> np.ndarray:
        """size x size x 3 BGR uint8 -> float32 in the model's channel order and layout."""
        import cv2

        planes = cv2.split(pixels_bgr)[::-1]  # R, G, B: the order mean/std are given in
        chans = [cv2.addWeighted(p, float(s), p, 0.0, float(b), dtype=cv2.CV_32F)
                 for p, s, b in zip(planes, self._scale, self._bias)]  # p / (255 std) - mean / std
        if not self._rgb_input:
            chans = chans[::-1]
        if self.pre.layout == "NCHW":
            return np.stack(chans)
        return cv2.merge(chans)

    def __call__(self, frame_bgr: np.ndarray) -> np.ndarray:
        if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 BGR frame, got {frame_bgr.shape} {frame_bgr.dtype}")
        return self.normalize(self.geometry(frame_bgr))


@dataclass(frozen=True)
class _Plan:
    """How one frame size becomes size x size: both axis plans (already cropped) and the order."""

    size: int
    horizontal: AxisPlan | None  # None: the width does not change (Pillow skips the pass)
    vertical: AxisPlan | None
    left: int
    top: int
    vertical_first: bool

    @classmethod
    def make(cls, pre: Preprocessing, h: int, w: int) -> "_Plan":
        if pre.resize <= 0:
            nw = nh = pre.size
            left = top = 0
        else:  # shorter side to ``resize`` then a centre crop, as Preprocessing.geometry
            scale = pre.resize / min(w, h)
            nw, nh = max(pre.size, round(w * scale)), max(pre.size, round(h * scale))
            left, top = (nw - pre.size) // 2, (nh - pre.size) // 2
        px = None if nw == w else AxisPlan.pillow(w, nw, pre.interpolation)
        py = None if nh == h else AxisPlan.pillow(h, nh, pre.interpolation)
        vertical_first = (px is not None and py is not None and pre.interpolation != "nearest"
                          and _pillow_resizes_vertically_first(h, w, px, py, pre.interpolation))
        return cls(pre.size, px and px.crop(left, pre.size), py and py.crop(top, pre.size),
                   left, top, vertical_first)

    def run(self, frame: np.ndarray) -> np.ndarray:
        if self.vertical_first:
            return _horizontal(_vertical(frame, self.vertical), self.horizontal)
        tmp = (_horizontal(frame, self.horizontal) if self.horizontal is not None
               else frame[:, self.left:self.left + self.size])
        out = (_vertical(tmp, self.vertical) if self.vertical is not None
               else tmp[self.top:self.top + self.size])
        return np.ascontiguousarray(out)


def _horizontal(img: np.ndarray, plan: AxisPlan) -> np.ndarray:
    """Resample the width: columns become contiguous rows after an OpenCV transpose."""
    import cv2

    h, w = img.shape[:2]
    cols = cv2.transpose(np.ascontiguousarray(img)).reshape(w, h * 3)
    n = len(plan.index[0])
    return cv2.transpose(plan.apply(cols).reshape(n, h, 3))


def _vertical(img: np.ndarray, plan: AxisPlan) -> np.ndarray:
    h, w = img.shape[:2]
    n = len(plan.index[0])
    return plan.apply(np.ascontiguousarray(img).reshape(h, w * 3)).reshape(n, w, 3)


def _pillow_resizes_vertically_first(h: int, w: int, px: AxisPlan, py: AxisPlan,
                                     interpolation: str) -> bool:
    """Which pass the installed Pillow runs first for this size (once per frame size).

    Pillow ran the horizontal pass first for years; newer releases run the vertical one first
    when the height shrinks much more than the width. The uint8 rounding between the passes
    makes the order visible, so ask Pillow itself on a noise image rather than hard-code a
    version's rule.
    """
    from PIL import Image

    nw, nh = len(px.index[0]), len(py.index[0])
    noise = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[interpolation]
    ref = np.asarray(Image.fromarray(noise).resize((nw, nh), resample))
    return (not np.array_equal(ref, _vertical(_horizontal(noise, px), py))
            and np.array_equal(ref, _horizontal(_vertical(noise, py), px)))
