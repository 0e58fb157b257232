"""PyTorch 2 export (PT2E) quantization pieces shared by the backends that quantize with it
(TFLite through litert-torch, ExecuTorch through its XNNPACK quantizer): edgekit's activation
observers, the scalar-constant rewrite, and the module path a graph node came from."""
from __future__ import annotations


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

