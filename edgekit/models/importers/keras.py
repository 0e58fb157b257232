"""Import a Keras 2 ``.h5`` MobileNet (separate BatchNorm layers) with h5py only, no TensorFlow.

Supported layers: Conv2D, DepthwiseConv2D and Dense (each optionally followed by
BatchNormalization), Activation/ReLU, and weightless layers (pooling, Flatten, Dropout, Add...).
Convolutions must use 'same' padding (edgekit's tf_same); 'valid' only for 1x1 kernels.
That covers MobileNetV1/V2-style graphs; Keras MobileNetV3 (hard-swish and squeeze-excite
built from Add/Multiply layers, ZeroPadding2D before strided convs) is not supported.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError, MissingDependencyError
from ...preprocessing import Preprocessing
from ..network import MobileNet
from ..registry import create, get_spec
from .common import Norm, check_activation, check_count, choose_width, load_layer, targets, v1_activation

WEIGHTLESS = {"InputLayer", "Dropout", "Flatten", "Reshape", "AveragePooling2D", "MaxPooling2D",
              "GlobalAveragePooling2D", "Add", "Multiply", "Rescaling", "SpatialDropout2D"}
# Keras activation names -> edgekit's; softmax on the logits does not change the top-1.
ACTIVATIONS = {"linear": "none", "softmax": "none", "relu": "relu", "relu6": "relu6",
               "hard_swish": "hswish", "hard_silu": "hswish"}


@dataclass
class KerasLayer:
    name: str
    weight: np.ndarray  # torch layout
    bias: np.ndarray | None
    activation: str
    norm: Norm | None = None


def import_keras(path: str | Path, arch: str, width: float | None = None,
                 labels: list[str] | None = None,
                 preprocessing: Preprocessing | None = None) -> MobileNet:
    """Build ``arch`` with the weights of a Keras .h5 model. A .h5 does not record how images were
    prepared: ``preprocessing`` defaults to TF's ``x / 127.5 - 1``; pass the model's own."""
    spec = get_spec(arch)
    path = Path(path)
    config, layers = _read(path)
    if not layers:
        raise InputError(f"{path.name} has no convolution or dense layers")
    resolution = _resolution(config, path)
    num_classes = int(layers[-1].weight.shape[0])
    width = choose_width(arch, [tuple(layer.weight.shape) for layer in layers], num_classes, width)
    activation = None
    if spec.style == "v1":
        activation = v1_activation([frozenset({layer.activation}) for layer in layers[:-1]])
    model = create(arch, width=width, resolution=resolution, num_classes=num_classes,
                   padding="tf_same", activation=activation, labels=labels,
                   preprocessing=preprocessing or Preprocessing.tensorflow(resolution),
                   weights=str(path))
    pairs = list(zip(targets(model), layers))
    for target, layer in pairs:
        load_layer(target, layer.weight, layer.bias, f"Keras layer '{layer.name}'", norm=layer.norm)
    check_count(model, len(layers), path.name)
    for target, layer in pairs:
        check_activation(target, frozenset({layer.activation}), f"Keras layer '{layer.name}'")
    adds = sum(1 for layer in _layer_configs(config) if layer["class_name"] == "Add")
    own = sum(1 for m in model.modules() if getattr(m, "use_residual", False))
    if adds != own:
        raise InputError(f"{path.name} has {adds} Add layers but {arch} has {own} residual "
                         "connections: not this architecture")
    return model.eval()


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise MissingDependencyError("h5py", "keras") from None
    return h5py


def _read(path: Path) -> tuple[dict, list[KerasLayer]]:
    h5py = _h5py()
    if not path.is_file():
        raise InputError(f"Keras model not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            if "model_config" not in f.attrs:
                raise InputError(f"{path.name} is not a Keras .h5 model (no model_config; "
                                 "weights-only files cannot be imported)")
            raw = f.attrs["model_config"]
            config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            root = f["model_weights"] if "model_weights" in f else f
            return config, _layers(config, root, path)
    except OSError as exc:
        raise InputError(f"cannot read Keras model {path}: {exc}") from exc


def _layer_configs(config: dict) -> list[dict]:
    inner = config.get("config", {})
    return inner.get("layers", []) if isinstance(inner, dict) else inner


def _resolution(config: dict, path: Path) -> int:
    layers = _layer_configs(config)
    cfg = layers[0].get("config", {}) if layers else {}
    shape = cfg.get("batch_input_shape") or cfg.get("batch_shape")
    if not shape or len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
        raise InputError(f"{path.name}: input shape {shape} is not a square NHWC RGB image")
    return int(shape[1])


def _weights(root: Any, name: str) -> dict[str, np.ndarray]:
    """A layer's arrays keyed by short name (kernel, bias, gamma, moving_mean...)."""
    if name not in root:
        return {}
    group = root[name]
    names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs.get("weight_names", [])]
    return {n.split("/")[-1].split(":")[0]: np.asarray(group[n], np.float32) for n in names}


def _layers(config: dict, root: Any, path: Path) -> list[KerasLayer]:
    found: list[KerasLayer] = []
    for layer in _layer_configs(config):
        kind, cfg = layer["class_name"], layer.get("config", {})
        name = cfg.get("name", layer.get("name", "?"))
        arrays = _weights(root, name)
        if kind in ("Conv2D", "DepthwiseConv2D", "Dense"):
            found.append(_weight_layer(kind, name, cfg, arrays))
        elif kind == "BatchNormalization":
            if not found or found[-1].norm is not None or found[-1].activation != "none":
                raise InputError(f"{path.name}: BatchNormalization '{name}' does not directly "
                                 "follow a convolution or dense layer")
            n = arrays["moving_mean"].shape[0]
            found[-1].norm = Norm(arrays.get("gamma", np.ones(n, np.float32)),
                                  arrays.get("beta", np.zeros(n, np.float32)),
                                  arrays["moving_mean"], arrays["moving_variance"],
                                  float(cfg.get("epsilon", 1e-3)))
        elif kind in ("Activation", "ReLU", "Softmax"):
            if found:
                found[-1].activation = _activation(kind, cfg)
        elif arrays or kind not in WEIGHTLESS:
            raise InputError(f"{path.name}: unsupported Keras layer '{name}' ({kind})")
    return found


def _weight_layer(kind: str, name: str, cfg: dict, arrays: dict[str, np.ndarray]) -> KerasLayer:
    if kind == "Dense":  # (in, out) -> (out, in)
        weight = arrays["kernel"].T
    else:
        kernel = cfg.get("kernel_size", [1, 1])
        if cfg.get("padding", "valid") != "same" and tuple(kernel) != (1, 1):
            raise InputError(f"Keras layer '{name}' uses '{cfg.get('padding')}' padding; "
                             "edgekit imports TensorFlow 'same' padding only")
        if kind == "Conv2D":  # (kh, kw, in, out) -> (out, in, kh, kw)
            weight = arrays["kernel"].transpose(3, 2, 0, 1)
        else:  # (kh, kw, in, multiplier) -> (in * multiplier, 1, kh, kw)
            kh, kw, cin, mult = arrays["depthwise_kernel"].shape
            weight = arrays["depthwise_kernel"].reshape(kh, kw, cin * mult).transpose(2, 0, 1)[:, None]
    activation = ACTIVATIONS.get(cfg.get("activation", "linear"), cfg.get("activation"))
    return KerasLayer(name, weight, arrays.get("bias"), activation)


def _activation(kind: str, cfg: dict) -> str:
    if kind == "Softmax":
        return "none"
    if kind == "ReLU":
        if cfg.get("negative_slope") or cfg.get("threshold"):
            return "leaky relu"
        return "relu6" if cfg.get("max_value") == 6 else "relu"
    return ACTIVATIONS.get(cfg.get("activation"), cfg.get("activation"))
