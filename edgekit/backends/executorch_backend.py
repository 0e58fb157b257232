"""ExecuTorch: PyTorch's own on-device runtime. ``.pte`` programs lowered to the XNNPACK delegate.

- fp32: ``torch.export`` -> ``to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])``
  -> ``.to_executorch()``.
- int8: static PT2E with the XNNPACK quantizer (per-channel symmetric int8 weights, per-tensor
  int8 activations calibrated on the CalibrationSet; executorch_quantizer.py), lowered the same
  way. Input and output stay float32 (the delegate quantizes and dequantizes at its edges).
  ``ConvertOptions.float_layers`` keeps those modules' ops float: XNNPACK runs them in fp32.

The runtime is ``executorch.runtime`` (it links libtorch: a device needs ``torch`` as well).
"""
from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConversionError, EdgekitError, InputError, MissingDependencyError, first_line
from ..fileio import atomic_path
from ..quiet import native_output_silenced
from .base import Artifact, Backend, ConvertOptions, RuntimeInfo, Session, register_backend
from .executorch_placement import delegate_placement, read_program
from .pt2e import check_request
from .executorch_quantizer import CALIBRATION_METHODS
from .executorch_session import EXTRA, ExecuTorchSession, portable_lib, runtime_version
from .placement import Placement

if TYPE_CHECKING:  # annotations only: importing them loads torch
    from ..calibration import CalibrationSet
    from ..source import ModelSource

WEIGHTED_OPS = ("aten.convolution.default", "aten.linear.default", "aten.addmm.default", "aten.mm.default")
BOOKKEEPING = ("getitem", "executorch_call_delegate")  # graph plumbing, not ops that run


@register_backend
class ExecuTorchBackend(Backend):
    default_calibration_method = "percentile"
    calibration_methods = CALIBRATION_METHODS
    converts_in_python = True  # torch.export + lowering: Python on one core
    name = "executorch"
    suffix = ".pte"
    precisions = ("fp32", "int8")
    extra = EXTRA
    modules = ("executorch.runtime",)
    color = (148, 103, 189)
    # Not emulated (`bench --emulate aarch64`): executorch 1.4.1 has an aarch64 wheel on PyPI, but
    # its runtime imports torch, and PyPI's torch 2.13.0 aarch64 wheel is the CUDA 13 build
    # (libtorch.so needs libtorch_cuda.so -> cudart, cublas, cudnn, nccl, ...: GBs of CUDA wheels);
    # the CPU build is only on download.pytorch.org/whl/cpu. With these wheels the emulated run
    # fails at `import torch` ("libcublasLt.so.*[0-9] not found").
    aarch64_wheels = ()
    description = "ExecuTorch + XNNPACK: .pte programs, fp32 and static PT2E int8 (XNNPACK quantizer)"

    def require(self) -> None:
        portable_lib()

    def require_converter(self) -> None:
        self.require()
        try:
            with native_output_silenced(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import executorch.backends.xnnpack.partition.xnnpack_partitioner  # noqa: F401
                import executorch.exir  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError(exc.name or "executorch", self.extra) from None

    def runtime_info(self) -> RuntimeInfo:
        return RuntimeInfo("executorch", runtime_version())

    # -- convert --------------------------------------------------------------------------------

    def convert(self, source: ModelSource, precision: str, calibration: CalibrationSet | None,
                out: Path, options: ConvertOptions) -> Artifact:
        check_request(self, "ExecuTorch", source, precision, calibration)
        if options.layout != "NCHW":
            raise InputError(f"the {self.name} backend writes NCHW programs, not {options.layout}")
        config = None
        if precision == "int8":
            from .executorch_quantizer import quantization_config

            config = quantization_config(calibration)  # rejects unknown methods before any work
        self.require_converter()
        try:
            with native_output_silenced(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data, details = _lower(source, precision, calibration, config, options)
        except EdgekitError:
            raise
        except Exception as exc:  # torch.export / PT2E / partitioner errors: one line for the user
            raise ConversionError(self.name, source.name, precision,
                                  f"executorch: {type(exc).__name__}: {first_line(exc)}") from exc
        if options.float_layers and not details["float_weighted_ops"]:
            raise ConversionError(self.name, source.name, precision,
                                  f"the XNNPACK quantizer quantized the layers asked to stay float "
                                  f"({', '.join(options.float_layers)}): no float layer in the model")
        out = Path(out)
        with atomic_path(out) as tmp:
            tmp.write_bytes(data)
        session = self.load(out)
        program = read_program(out)
        details["backends"] = program.delegates
        # what XNNPACK runs: its converts are float <-> int8 copies of whole activations
        details["xnnpack_nodes"] = dict(Counter(n for i in program.instructions for n in i.nodes).most_common())
        return Artifact(out, self.name, precision, session.input, [out], details)

    # -- load -----------------------------------------------------------------------------------

    def load(self, artifact: Artifact | Path, threads: int | None = None) -> Session:
        self.require()
        path = artifact.path if isinstance(artifact, Artifact) else Path(artifact)
        return ExecuTorchSession(path, threads)

    def stored_precision(self, path: Path) -> str:
        """int8 when the XNNPACK graphs in the program hold quantized tensors."""
        return "int8" if read_program(Path(path)).quantized else "fp32"

    def placement(self, path: Path) -> Placement:
        self.require()
        return delegate_placement(Path(path), f"executorch {runtime_version()}")


def _lower(source: ModelSource, precision: str, calibration: CalibrationSet | None, config,
           options: ConvertOptions) -> tuple[bytes, dict[str, Any]]:
    import executorch
    import torch
    from executorch.exir import to_edge_transform_and_lower

    from ..models.fold import fold_batchnorm

    module = fold_batchnorm(source.module).eval()
    example = (torch.zeros(source.input_shape),)
    details: dict[str, Any] = {"converter": f"executorch {getattr(executorch, '__version__', runtime_version())}",
                               "layout": "NCHW", "io_dtype": "float32", "delegate": "XNNPACK"}
    with torch.no_grad():
        if precision == "fp32":
            exported = _with_broadcast_constants(torch.export.export(module, example, strict=False), example)
        else:
            from .executorch_quantizer import quantize

            exported = quantize(module, example, calibration, config, options.float_layers)
            details.update(calibration_method=calibration.method, calibration_images=len(calibration),
                           weights="int8 per-channel symmetric", activations="int8 per-tensor")
            if options.float_layers:
                details["float_layers"] = list(options.float_layers)
        edge = to_edge_transform_and_lower(exported, partitioner=[xnnpack_partitioner()])
        details.update(_graph_facts(edge.exported_program()))
        data = edge.to_executorch().buffer
    return bytes(data), details


def _with_broadcast_constants(exported, example):
    """The program re-exported with ``x + 3`` / ``x * (1/6)`` scalars as (1, 1, 1, 1) constants
    (tflite_quantizer.scalars_to_broadcast_constants). XNNPACK's channels-last pass wraps an op
    with a 0-d operand in a transpose pair: MobileNetV3-Small's hard-swishes made 92 XNNPACK
    transposes of activations; with the constants of the activations' rank, 56 transposes of the
    one-element constants are left, and none of activations."""
    import torch

    from .pt2e import scalars_to_broadcast_constants

    module = exported.module()
    scalars_to_broadcast_constants(module)
    return torch.export.export(module, example, strict=False)


def xnnpack_partitioner():
    """XNNPACK's partitioner, with constant pads taken in int8 as well as fp32.

    Its own pad config is fp32 only, so in an int8 model every TF-'SAME' pad (MobileNetV2 with
    imported weights: 18) ran in fp32 between two XNNPACK converts of the whole activation
    (38 converts in the graph; p50 7.4 ms). Taken in int8 the pad reads and writes its producer's
    grid (the quantizer shares it, executorch_quantizer._share_pad_grids): 4 converts, identical
    outputs, 4.3 ms. XNNPACK's static pad op takes int8 tensors; only the partitioner's table
    left them out."""
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.config.generic_node_configs import ConstantPadConfig
    from executorch.backends.xnnpack.partition.config.xnnpack_config import ConfigPrecisionType
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    class Int8ConstantPadConfig(ConstantPadConfig):
        def supported_precision_types(self):
            return [ConfigPrecisionType.FP32, ConfigPrecisionType.STATIC_QUANT]

    configs = [Int8ConstantPadConfig if c is ConstantPadConfig else c for c in ALL_PARTITIONER_CONFIGS]
    return XnnpackPartitioner(configs=configs)


def _graph_facts(program) -> dict[str, Any]:
    """What the partitioner did: the ops inside the XNNPACK partitions, those left outside
    (ExecuTorch's portable kernels run them), and the weighted ops that stay float."""
    gm = program.graph_module
    inside: Counter = Counter()
    float_weighted = 0
    partitions = 0
    for node in gm.graph.nodes:
        if node.op == "get_attr" and node.target.startswith("lowered_module"):
            partitions += 1
            lowered = getattr(gm, node.target)
            for inner in lowered.original_module.graph.nodes:
                if inner.op != "call_function":
                    continue
                name = _op_name(inner)
                inside[name] += 1
                if name in WEIGHTED_OPS and not _dequantized(inner.args[1]):
                    float_weighted += 1
    outside = Counter(_op_name(n) for n in gm.graph.nodes
                      if n.op == "call_function" and _op_name(n) not in BOOKKEEPING)
    delegated = {k: v for k, v in inside.items() if "quantize_per" not in k}
    return {"xnnpack_partitions": partitions, "ops": dict(sorted(delegated.items())),
            "quantize_ops": sum(v for k, v in inside.items() if "quantize_per" in k),
            "ops_outside_xnnpack": dict(sorted(outside.items())),
            "float_weighted_ops": float_weighted}


def _op_name(node) -> str:
    name = getattr(node.target, "__name__", str(node.target))
    return str(node.target).removeprefix("<EdgeOpOverload: ").split(">")[0] if "EdgeOpOverload" in str(
        node.target) else name


def _dequantized(weight) -> bool:
    """A weight fed through a dequantize node: stored as int8."""
    return getattr(weight, "op", None) == "call_function" and "dequantize" in str(weight.target)
