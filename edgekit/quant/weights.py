"""int8-ready weights, prepared once in PyTorch and inherited by every backend: optimal
rounding, then bias correction.

Rounding
--------

Every int8 backend edgekit drives quantizes a conv/linear weight per output channel, symmetric,
on the grid ``scale = max|w| / 127`` (ONNX Runtime, NNCF, the PT2E quantizer behind LiteRT), and
rounds each weight to the nearest grid point. Nearest is the best choice weight by weight, not for
the layer's output: the errors of one output channel add up over its inputs. Here each layer's
weights are rounded column by column with the rest of the row compensating for the error made so
far, weighted by the second moment of the layer's real inputs on calibration images (the
Optimal Brain Quantizer / GPTQ update). The result is written back as float weights that already
sit on each backend's grid: the channel's largest weight keeps its value (so every backend derives
the same scale) and every other weight is an integer multiple of that scale, so the backend's own
round-to-nearest reproduces the chosen rounding exactly.

BatchNorm is folded into the convolutions first, since the folded weights are what get quantized.

Bias correction
---------------
Quantizing a layer's input shifts the mean of its output: h-swish's negative tail (-0.375..0)
lands on two or three grid points of a 0..40 range, and a depthwise convolution with large folded
gains turns that into a per-channel offset that no later layer undoes. For each layer, with its
real float input on calibration images, the mean of (rounded weights x quantized input) minus the
mean of (float weights x float input) is subtracted from its bias. The input grid is estimated
the way the backend's calibration method sets it (asymmetric, 256 levels). Backends that correct
their own bias (OpenVINO through NNCF) are given the rounded model without this step: NNCF would
measure our correction as a float-model change and undo it.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..choices import ROUNDINGS
from ..models.blocks import TFSameConv2d
from ..models.fold import fold_batchnorm
from ..source import FORWARD_BATCH, channels_last

QMAX = 127
DAMPING = 0.01  # of the mean diagonal of H: keeps the inverse well-conditioned on few images
BLOCK = 64  # columns rounded per block (round_grouped)

PERCENTILE = 99.999  # what litert's and ORT's percentile calibrators default to here
SAMPLES_PER_IMAGE = 4096  # values per layer input and image kept for percentile estimates


@dataclass(frozen=True)
class Int8Weights:
    model: nn.Module  # BatchNorm folded, weights on the int8 grid
    folded: nn.Module  # BatchNorm folded, original weights
    images: np.ndarray  # the calibration images the rounding (and bias correction) used
    rounding: str  # "optimal" or "nearest"
    layers: int
    # Mean over layers of the layer's output error power relative to its output power, for
    # round-to-nearest and for the chosen rounding, on the calibration inputs.
    nearest_error: float
    optimised_error: float
    seconds: float = 0.0
    bias_correction: bool = True
    # the float model's layer inputs on ``images``, recorded in the rounding's pass
    input_stats: InputStats | None = field(default=None, compare=False, repr=False)
    _corrected: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_images(self) -> int:
        return len(self.images)

    def to_dict(self) -> dict:
        return {"method": self.rounding, "layers": self.layers, "n_images": self.n_images,
                "nearest_output_error": round(self.nearest_error, 8),
                "optimised_output_error": round(self.optimised_error, 8), "seconds": round(self.seconds, 1),
                "bias_correction": self.bias_correction}

    def keeping_float(self, layers: tuple[str, ...]) -> nn.Module:
        """The rounded model with the original weights back in ``layers`` (module paths): layers
        that stay float in a mixed-precision build lose nothing to rounding."""
        if not layers:
            return self.model
        model = copy.deepcopy(self.model)
        original = _weighted(self.folded)
        inside = _in_layers(layers)
        with torch.no_grad():
            for name, module in _weighted(model).items():
                if inside(name):
                    module.weight.copy_(original[name].weight)
        return model

    def bias_corrected(self, method: str, options: dict | None = None,
                       float_layers: tuple[str, ...] = ()) -> nn.Module:
        """The rounded model (original weights in ``float_layers``) with each quantized layer's
        bias corrected for the output shift int8 causes, activation grids estimated as
        calibration ``method`` sets them. Cached per (method, options, float layers)."""
        key = (method, tuple(sorted((options or {}).items())), tuple(float_layers))
        if key not in self._corrected:
            model = copy.deepcopy(self.keeping_float(float_layers))
            skip = _in_layers(float_layers)
            stats = self.input_stats or observe_inputs(self.folded, self.images)[1]
            ranges = stats.ranges(method, options)
            shifts = output_shifts(self.folded, model, self.images, ranges, skip)
            with torch.no_grad():
                for name, module in _weighted(model).items():
                    if name in shifts:
                        shift = shifts[name].to(module.weight.dtype)
                        if module.bias is None:
                            module.bias = nn.Parameter(-shift)
                        else:
                            module.bias -= shift
            self._corrected[key] = model
        return self._corrected[key]


def _patches(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """(groups, group_fan_in, positions): what each output position of ``conv`` reads, per group,
    ordered like the weight (input channel, then kernel row, then kernel column)."""
    if conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1:
        return x.transpose(0, 1).reshape(1, x.shape[1], -1)
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    if isinstance(conv, TFSameConv2d):
        top, bottom = conv.same_pad(x.shape[-2], kh, sh, dh)
        left, right = conv.same_pad(x.shape[-1], kw, sw, dw)
    else:
        (top, left), (bottom, right) = conv.padding, conv.padding
    xp = F.pad(x.transpose(0, 1), (left, right, top, bottom))  # C, N, H, W
    ho = (xp.shape[-2] - dh * (kh - 1) - 1) // sh + 1
    wo = (xp.shape[-1] - dw * (kw - 1) - 1) // sw + 1
    taps = [xp[..., i * dh:i * dh + sh * (ho - 1) + 1:sh, j * dw:j * dw + sw * (wo - 1) + 1:sw]
            for i in range(kh) for j in range(kw)]
    cols = torch.stack(taps, 1)  # C, k*k, N, Ho, Wo
    return cols.reshape(conv.groups, -1, cols[0, 0].numel())


def _inputs(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Conv2d):
        return _patches(layer, x)
    return x.reshape(-1, x.shape[-1]).t()[None]


def _grouped_weight(layer: nn.Module) -> torch.Tensor:
    w = layer.weight.detach()
    g = layer.groups if isinstance(layer, nn.Conv2d) else 1
    return w.reshape(g, w.shape[0] // g, -1).double()


def input_moments(model: nn.Module, images: np.ndarray) -> dict[str, torch.Tensor]:
    """Per conv/linear layer: H = sum of x x^T over every input patch it reads, (groups, d, d)."""
    return observe_inputs(model, images, moments=True)[0]


@dataclass
class InputStats:
    """Per conv/linear layer input and image: its (min, max), and a strided sample of its
    values (SAMPLES_PER_IMAGE) for percentile estimates."""

    extremes: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    samples: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    def record(self, name: str, x: torch.Tensor) -> None:
        x = x.detach().float().flatten(1)
        self.extremes.setdefault(name, []).append(torch.stack([x.amin(1), x.amax(1)], 1))
        step = max(1, x.shape[1] // SAMPLES_PER_IMAGE)
        self.samples.setdefault(name, []).append(x[:, ::step].flatten())

    def ranges(self, method: str, options: dict | None = None) -> dict[str, tuple[float, float]]:
        """Each input's (min, max) as a calibration method would set it: "minmax" the extremes,
        "mean_minmax" the mean over images of each image's extremes, anything else (the
        histogram methods) the [100 - p, p] percentiles, p = options["percentile"] or 99.999."""
        ranges = {}
        p = float((options or {}).get("percentile", PERCENTILE)) / 100
        for name, stats in self.extremes.items():
            stats = torch.cat(stats)
            if method == "minmax":
                lo, hi = float(stats[:, 0].min()), float(stats[:, 1].max())
            elif method == "mean_minmax":
                lo, hi = float(stats[:, 0].mean()), float(stats[:, 1].mean())
            else:
                values = torch.cat(self.samples[name])
                lo, hi = (float(v) for v in np.quantile(values.numpy(), [1 - p, p]))  # 7x torch's
            ranges[name] = (min(lo, 0.0), max(hi, 0.0))
        return ranges


def observe_inputs(model: nn.Module, images: np.ndarray,
                   moments: bool = False) -> tuple[dict[str, torch.Tensor], InputStats]:
    """One hooked pass over ``images``: every conv/linear input's statistics and, with
    ``moments``, its patches' second moments H (what the rounding needs)."""
    hs: dict[str, torch.Tensor] = {}
    stats = InputStats()

    def hook(name):
        def record(module, inputs):
            stats.record(name, inputs[0])
            if moments:
                cols = _inputs(module, inputs[0].detach().float())
                h = torch.bmm(cols, cols.transpose(1, 2)).double()
                hs[name] = hs[name] + h if name in hs else h
        return record

    # FORWARD_BATCH images per call also bounds memory: a V2 depthwise layer's patches of 10
    # images are ~150 MB
    _run_hooked(model, images, [m.register_forward_pre_hook(hook(n)) for n, m in _weighted(model).items()])
    return hs, stats


def round_grouped(w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Weights (groups, rows, d) rounded onto the per-row symmetric int8 grid, minimising
    ||(w - q) x|| for inputs with second moment ``h`` (groups, d, d)."""
    g, rows, d = w.shape
    absmax = w.abs().amax(-1)
    scale = torch.where(absmax > 0, absmax / QMAX, torch.ones_like(absmax))
    keep = (w.abs() == absmax[..., None]) & (absmax[..., None] > 0)
    keep &= torch.cumsum(keep.int(), -1) == 1  # one element per row keeps its (on-grid) value
    h = h.clone()
    diag = torch.diagonal(h, dim1=-2, dim2=-1)
    dead = diag <= 0
    diag[dead] = 1.0
    order = torch.argsort(diag, dim=-1, descending=True)  # largest inputs first
    idx = order[:, None, :].expand(g, rows, d)
    w = torch.gather(w, -1, idx).clone()
    keep = torch.gather(keep, -1, idx)
    h = torch.gather(torch.gather(h, 1, order[:, :, None].expand(g, d, d)), 2, order[:, None, :].expand(g, d, d))
    h += DAMPING * torch.diagonal(h, dim1=-2, dim2=-1).mean(-1)[:, None, None] * torch.eye(d, dtype=h.dtype)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.empty_like(w)
    # Columns in blocks: each rounding error corrects the rest of its block at once and the
    # columns after the block in one matrix product per block (GPTQ's lazy batch update).
    for start in range(0, d, BLOCK):
        end = min(start + BLOCK, d)
        block, ub = w[:, :, start:end].clone(), u[:, start:end, start:end]
        errors = torch.empty_like(block)
        for j in range(end - start):
            col = block[:, :, j]
            rounded = torch.clamp(torch.round(col / scale), -QMAX, QMAX) * scale
            rounded = torch.where(keep[:, :, start + j], torch.sign(col) * QMAX * scale, rounded)
            q[:, :, start + j] = rounded
            errors[:, :, j] = err = (col - rounded) / ub[:, j, j][:, None]
            block[:, :, j:] -= err[:, :, None] * ub[:, None, j, j:]
        w[:, :, end:] -= torch.bmm(errors, u[:, start:end, end:])
    out = torch.empty_like(q)
    out.scatter_(-1, idx, q)
    return out


def _nearest(w: torch.Tensor) -> torch.Tensor:
    absmax = w.abs().amax(-1, keepdim=True)
    scale = torch.where(absmax > 0, absmax / QMAX, torch.ones_like(absmax))
    return torch.clamp(torch.round(w / scale), -QMAX, QMAX) * scale


def _error(delta: torch.Tensor, h: torch.Tensor) -> float:
    return float(torch.einsum("grd,gde,gre->", delta, h, delta))


def _weighted(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def _in_layers(layers: tuple[str, ...]):
    return lambda name: any(name == layer or name.startswith(layer + ".") for layer in layers)


def _batches(images: np.ndarray, size: int = FORWARD_BATCH):
    for i in range(0, len(images), size):
        yield channels_last(images[i:i + size])


def _run_hooked(model: nn.Module, images: np.ndarray, handles: list, batch: int = FORWARD_BATCH) -> None:
    """Run ``images`` through ``model`` with hooks ``handles`` registered, then remove them."""
    try:
        with torch.no_grad():
            for x in _batches(images, batch):
                model(x)
    finally:
        for h in handles:
            h.remove()


def activation_ranges(model: nn.Module, images: np.ndarray, method: str,
                      options: dict | None = None) -> dict[str, tuple[float, float]]:
    """Each conv/linear input's (min, max) as calibration ``method`` would set it on ``images``
    (InputStats.ranges)."""
    return observe_inputs(model, images)[1].ranges(method, options)


def fake_quantize(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """x on the asymmetric 256-level grid spanning [lo, hi] (zero exactly representable)."""
    if hi <= lo:
        return x
    scale = (hi - lo) / 255
    zero = round(-lo / scale)
    return (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale


def output_shifts(float_model: nn.Module, int8_model: nn.Module, images: np.ndarray,
                  ranges: dict[str, tuple[float, float]], skip=lambda name: False) -> dict[str, torch.Tensor]:
    """Per layer: mean over images and positions of (int8 layer on the quantized float input)
    minus (float layer on the float input), per output channel."""
    quantized = _weighted(int8_model)
    sums: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(module, inputs, output):
            lo, hi = ranges[name]
            shifted = quantized[name](fake_quantize(inputs[0], lo, hi)) - output
            dims = [d for d in range(shifted.dim()) if d != 1] if shifted.dim() > 2 else [0]
            mean = shifted.double().mean(dims) * inputs[0].shape[0]
            sums[name] = sums[name] + mean if name in sums else mean
        return record

    _run_hooked(float_model, images, [m.register_forward_hook(hook(n)) for n, m in _weighted(float_model).items()
                                      if n in ranges and not skip(n)])
    return {name: total / len(images) for name, total in sums.items()}


def round_weights(model: nn.Module, images: np.ndarray, rounding: str = "optimal") -> Int8Weights:
    """A BatchNorm-folded copy of ``model`` whose conv/linear weights are on the int8 grid:
    rounded to minimise each layer's output error on ``images`` (preprocessed, NCHW), or to
    nearest (what the backends would do; bias correction can still start from it)."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    start = time.perf_counter()
    original = fold_batchnorm(model)
    folded = copy.deepcopy(original)
    moments, stats = observe_inputs(folded, images, moments=True)  # folded: still the float weights
    nearest_total = optimised_total = 0.0
    with torch.no_grad():
        for name, layer in _weighted(folded).items():
            if name not in moments:
                continue
            w = _grouped_weight(layer)
            h = moments[name]
            q = round_grouped(w, h) if rounding == "optimal" else _nearest(w)
            signal = max(_error(w, h), 1e-30)
            nearest_total += _error(_nearest(w) - w, h) / signal
            optimised_total += _error(q - w, h) / signal
            layer.weight.copy_(q.reshape(layer.weight.shape).to(layer.weight.dtype))
    n = max(len(moments), 1)
    return Int8Weights(folded, original, np.asarray(images, np.float32), rounding, len(moments),
                       nearest_total / n, optimised_total / n, time.perf_counter() - start,
                       input_stats=stats)
