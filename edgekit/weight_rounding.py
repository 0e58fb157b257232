"""Output-aware rounding of int8 weights, done once in PyTorch and inherited by every backend.

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
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .models.blocks import TFSameConv2d

QMAX = 127
DAMPING = 0.01  # of the mean diagonal of H: keeps the inverse well-conditioned on few images


ROUNDINGS = ("optimal", "nearest")


@dataclass(frozen=True)
class RoundingResult:
    model: nn.Module  # BatchNorm folded, weights on the int8 grid
    folded: nn.Module  # BatchNorm folded, original weights
    layers: int
    n_images: int
    # Mean over layers of the layer's output error power relative to its output power, for
    # round-to-nearest and for the chosen rounding, on the calibration inputs.
    nearest_error: float
    optimised_error: float
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"method": "optimal", "layers": self.layers, "n_images": self.n_images,
                "nearest_output_error": round(self.nearest_error, 8),
                "optimised_output_error": round(self.optimised_error, 8), "seconds": round(self.seconds, 1)}

    def keeping_float(self, layers: tuple[str, ...]) -> nn.Module:
        """The rounded model with the original weights back in ``layers`` (module paths): layers
        that stay float in a mixed-precision build lose nothing to rounding."""
        if not layers:
            return self.model
        model = copy.deepcopy(self.model)
        original = dict(self.folded.named_modules())
        with torch.no_grad():
            for name, module in model.named_modules():
                if isinstance(module, (nn.Conv2d, nn.Linear)) and any(
                        name == layer or name.startswith(layer + ".") for layer in layers):
                    module.weight.copy_(original[name].weight)
        return model


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every Conv2d -> BatchNorm2d pair (inside a Sequential) merged."""
    model = copy.deepcopy(model).eval()
    for parent in model.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        children = list(parent.named_children())
        for (_, conv), (bn_name, bn) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                _fold(conv, bn)
                setattr(parent, bn_name, nn.Identity())
    return model


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.mul_(gain.view(-1, 1, 1, 1))
        conv.bias = nn.Parameter((bias - bn.running_mean) * gain + bn.bias)


def _patches(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """(groups, group_fan_in, positions): what each output position of ``conv`` reads, per group,
    ordered like the weight (input channel, then kernel row, then kernel column)."""
    if conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1:
        return x.transpose(0, 1).reshape(1, x.shape[1], -1)
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    if isinstance(conv, TFSameConv2d):
        top, bottom = conv._pad(x.shape[-2], kh, sh, dh)
        left, right = conv._pad(x.shape[-1], kw, sw, dw)
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


def input_moments(model: nn.Module, images: np.ndarray, batch: int = 10) -> dict[str, torch.Tensor]:
    """Per conv/linear layer: H = sum of x x^T over every input patch it reads, (groups, d, d)."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    moments: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(module, inputs):
            cols = _inputs(module, inputs[0].detach().float())
            h = torch.bmm(cols, cols.transpose(1, 2)).double()
            moments[name] = moments[name] + h if name in moments else h
        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch):
                model(torch.from_numpy(np.ascontiguousarray(images[i:i + batch], np.float32)))
    finally:
        for h in handles:
            h.remove()
    return moments


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
    for j in range(d):
        col = w[:, :, j]
        rounded = torch.clamp(torch.round(col / scale), -QMAX, QMAX) * scale
        rounded = torch.where(keep[:, :, j], torch.sign(col) * QMAX * scale, rounded)
        q[:, :, j] = rounded
        err = (col - rounded) / u[:, j, j][:, None]
        w[:, :, j:] -= err[:, :, None] * u[:, None, j, j:]
    out = torch.empty_like(q)
    out.scatter_(-1, idx, q)
    return out


def _nearest(w: torch.Tensor) -> torch.Tensor:
    absmax = w.abs().amax(-1, keepdim=True)
    scale = torch.where(absmax > 0, absmax / QMAX, torch.ones_like(absmax))
    return torch.clamp(torch.round(w / scale), -QMAX, QMAX) * scale


def _error(delta: torch.Tensor, h: torch.Tensor) -> float:
    return float(torch.einsum("grd,gde,gre->", delta, h, delta))


def round_weights(model: nn.Module, images: np.ndarray) -> RoundingResult:
    """A BatchNorm-folded copy of ``model`` whose conv/linear weights are on the int8 grid,
    rounded to minimise each layer's output error on ``images`` (preprocessed, NCHW)."""
    start = time.perf_counter()
    original = fold_batchnorm(model)
    folded = copy.deepcopy(original)
    moments = input_moments(folded, images)
    layers = {n: m for n, m in folded.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    nearest_total = optimised_total = 0.0
    with torch.no_grad():
        for name, layer in layers.items():
            if name not in moments:
                continue
            w = _grouped_weight(layer)
            h = moments[name]
            q = round_grouped(w, h)
            signal = max(_error(w, h), 1e-30)
            nearest_total += _error(_nearest(w) - w, h) / signal
            optimised_total += _error(q - w, h) / signal
            layer.weight.copy_(q.reshape(layer.weight.shape).to(layer.weight.dtype))
    n = max(len(moments), 1)
    return RoundingResult(folded, original, len(moments), len(images), nearest_total / n,
                          optimised_total / n, time.perf_counter() - start)
