"""PyTorch 2 export (PT2E) quantization pieces shared by the backends that quantize with it
(TFLite through litert-torch, ExecuTorch through its XNNPACK quantizer): edgekit's activation
observers, the scalar-constant rewrite, and the module path a graph node came from."""
from __future__ import annotations

from ..errors import InputError

CALIBRATION_METHODS = ("minmax", "mean_minmax", "histogram", "mse", "percentile")


def check_request(backend, converter: str, source, precision: str, calibration) -> None:
    """What a PT2E backend refuses before any work: an ONNX-only model (it exports a PyTorch
    module), a precision it does not build, int8 without calibration images."""
    if source.module is None:
        what = source.onnx_path.name if source.onnx_path else "this model"
        raise InputError(f"{converter} conversion needs a PyTorch model (an edgekit model or "
                         f"checkpoint); {what} is ONNX-only: build it with the onnxruntime or "
                         "openvino backend instead")
    if precision not in backend.precisions:
        raise InputError(f"{backend.name} does not build {precision} "
                         f"(choose from {', '.join(backend.precisions)})")
    if precision == "int8" and (calibration is None or len(calibration) == 0):
        raise InputError("int8 conversion needs calibration images")


def with_activation_observer(base, calibration, backend: str):
    """``base`` (a per-channel symmetric QuantizationConfig) with the activation observer
    ``calibration``'s method asks for; InputError naming ``backend`` for a method it lacks."""
    import dataclasses

    from torchao.quantization.pt2e.observer import HistogramObserver, MinMaxObserver

    method, options = calibration.method, calibration.options or {}
    if method not in CALIBRATION_METHODS:
        raise InputError(f"the {backend} backend cannot calibrate with '{method}' (it supports "
                         f"{', '.join(CALIBRATION_METHODS)})")
    if method == "minmax":
        observer = MinMaxObserver.with_args(eps=2**-12)
    elif method == "mean_minmax":
        observer = mean_minmax_observer().with_args(eps=2**-12)
    elif method in ("histogram", "mse"):
        # HistogramObserver picks the range that minimises the L2 (MSE) quantization error.
        observer = HistogramObserver.with_args(eps=2**-12, bins=int(options.get("num_bins", 2048)))
    else:
        percentile = float(options.get("percentile", 99.999))
        if not 50.0 < percentile <= 100.0:
            raise InputError(f"percentile must be in (50, 100], got {percentile}")
        observer = percentile_observer().with_args(eps=2**-12, percentile=percentile,
                                                    images=len(calibration))
    act = dataclasses.replace(base.input_activation, observer_or_fake_quant_ctr=observer)
    return dataclasses.replace(base, input_activation=act, output_activation=act)


def percentile_observer():
    import torch
    from torchao.quantization.pt2e.observer import MinMaxObserver

    from ..quant.percentiles import TailPercentiles

    class PercentileObserver(MinMaxObserver):
        """Range = the exact [100 - p, p] percentiles of every value observed over the
        ``images`` calibration images (dim 0 of each call), kept in one pass (quant/percentiles.py).
        torchao's HistogramObserver, which this replaced, spent ~10 s of MobileNetV2's 200-image
        calibration re-binning histograms."""

        def __init__(self, percentile: float = 99.999, images: int = 1, **kwargs):
            super().__init__(**kwargs)
            self.percentile = float(percentile)
            self.images = int(images)
            self._tails = None

        def forward(self, x_orig):
            if x_orig.numel() == 0:
                return x_orig
            x = x_orig.detach().float()
            if self._tails is None:
                per_image = x.numel() // (x.shape[0] if x.dim() > 1 else 1)
                self._tails = TailPercentiles(1 - self.percentile / 100, per_image * self.images)
            self._tails.update(x.numpy())
            # not MinMaxObserver.forward: torch's aminmax on a channels-last activation viewed as
            # NCHW measured 160 ms per 32-image call, numpy's pass over the same memory 14 ms
            return x_orig

        def calculate_qparams(self):
            if self._tails is None:
                return super().calculate_qparams()  # unobserved: torchao's default + warning
            lo, hi = self._tails.range()
            return self._calculate_qparams(torch.tensor(lo), torch.tensor(hi))

    return PercentileObserver


def mean_minmax_observer():
    import torch
    from torchao.quantization.pt2e.observer import MinMaxObserver

    class MeanMinMaxObserver(MinMaxObserver):
        """Range = the mean over calibration images (dim 0 of each call) of each image's min and max:
        NNCF's MEAN_MINMAX, ONNX Runtime's MinMax with a moving average."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self._sums = [0.0, 0.0, 0]

        def forward(self, x_orig):
            if x_orig.numel() == 0:
                return x_orig
            # one call sees a batch of images (dim 0): each image's extremes count once
            x = x_orig.detach().float()
            x = x.reshape(x.shape[0], -1) if x.dim() > 1 else x.reshape(1, -1)
            lo, hi = x.aminmax(dim=1)
            self._sums[0] += float(lo.sum())
            self._sums[1] += float(hi.sum())
            self._sums[2] += x.shape[0]
            n = self._sums[2]
            self.min_val.copy_(torch.tensor(self._sums[0] / n))
            self.max_val.copy_(torch.tensor(self._sums[1] / n))
            return x_orig

    return MeanMinMaxObserver


def scalars_to_broadcast_constants(model) -> None:
    """``x + 3.0`` / ``x * (1/6)`` (hard-swish, hard-sigmoid): give the scalar the rank of ``x``.

    The quantizer has to turn such scalars into constant tensors to quantize them; litert-torch
    makes them 0-d, and its NHWC layout pass then keeps the whole ADD/MUL chain NCHW with a
    TRANSPOSE on each side (MobileNetV3: ~35 TRANSPOSEs). A (1, 1, 1, 1) constant broadcasts
    the same and lets the chain stay NHWC.
    """
    import torch

    for node in list(model.graph.nodes):
        if node.op != "call_function" or node.target not in (torch.ops.aten.add.Tensor,
                                                              torch.ops.aten.mul.Tensor):
            continue
        tensors = [a for a in node.args if isinstance(a, torch.fx.Node)]
        val = tensors[0].meta.get("val") if len(tensors) == 1 else None
        if val is None or not hasattr(val, "ndim") or val.ndim == 0:
            continue
        args = []
        for arg in node.args:
            if isinstance(arg, (int, float)) and not isinstance(arg, bool):
                name = f"_edgekit_scalar_{len(list(model.buffers()))}"
                while hasattr(model, name):
                    name += "_"
                model.register_buffer(name, torch.full((1,) * val.ndim, float(arg), dtype=val.dtype))
                with model.graph.inserting_before(node):
                    arg = model.graph.create_node("get_attr", name, (), {})
            args.append(arg)
        node.args = tuple(args)
    model.recompile()


def innermost_module(node) -> str:
    """The module path torch.export recorded for a node ("" for none): the innermost entry of
    its ``nn_module_stack``."""
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""

