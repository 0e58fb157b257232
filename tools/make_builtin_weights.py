"""Regenerate edgekit/data/weights/ (the built-in ImageNet MobileNets) from Google's published
Apache-2.0 TFLite files.

Maintainers only:
    python tools/make_builtin_weights.py SRC_DIR [--labels FILE] [--out edgekit/data/weights]
SRC_DIR holds the .tflite files named in MODELS (and imagenet_labels.txt, Google's 1001 labels).
Each file is imported exactly as `edgekit weights import` does, then stored losslessly
(edgekit/models/builtin.py describes the encodings); every decoded tensor is checked bit-for-bit
against the imported checkpoint before anything is written. The output is deterministic.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgekit.datasets import read_labels  # noqa: E402
from edgekit.models.builtin import BUILTIN_PREFIX, ENCODING_KEY, INDEX_NAME, META_KEY, decode  # noqa: E402
from edgekit.models.importers import import_tflite  # noqa: E402
from edgekit.models.importers.common import targets  # noqa: E402
from edgekit.models.importers.tflite import WEIGHT_OPS  # noqa: E402
from edgekit.models.importers.tflite_graph import Graph  # noqa: E402

# source file -> (built-in name, architecture)
MODELS = {
    "mobilenet_v1_0.25_128_quant.tflite": ("mobilenet_v1_0.25_128", "mobilenet_v1"),
    "mobilenet_v1_0.5_160_quant.tflite": ("mobilenet_v1_0.5_160", "mobilenet_v1"),
    "mobilenet_v1_0.75_192_quant.tflite": ("mobilenet_v1_0.75_192", "mobilenet_v1"),
    "mobilenet_v2_1.0_224_quant.tflite": ("mobilenet_v2_1.0_224", "mobilenet_v2"),
    "mobilenet_v3_small_1.0_224.uint8.tflite": ("mobilenet_v3_small_1.0_224", "mobilenet_v3_small"),
}
INT_TYPES = {np.dtype(np.uint8): torch.uint8, np.dtype(np.int8): torch.int8, np.dtype(np.int32): torch.int32}


def grids(graph: Graph, model) -> dict[str, tuple[np.ndarray, np.ndarray, torch.dtype]]:
    """state_dict key -> (scales, zero points, integer type) of the TFLite tensor it came from,
    pairing layers in execution order as the importer does."""
    names = {m: n for n, m in model.named_modules()}
    ops = [op for op in graph.ops if op.kind in WEIGHT_OPS]
    found = {}
    for target, op in zip(targets(model), ops):
        weight_key = f"{target.name}.weight"
        bias_key = f"{names[target.norm]}.bias" if target.norm is not None else f"{target.name}.bias"
        for key, tensor in ((weight_key, op.inputs[1]), (bias_key, op.inputs[2] if len(op.inputs) > 2 else -1)):
            if tensor < 0:
                continue
            t = graph.tensors[tensor]
            q = t["quantization_parameters"]
            if np.dtype(t["dtype"]) in INT_TYPES and q["scales"].size:
                found[key] = (q["scales"].astype(np.float32), q["zero_points"].astype(np.int32),
                              INT_TYPES[np.dtype(t["dtype"])])
    return found


def encode(key: str, value: torch.Tensor, grid) -> tuple[dict, dict[str, torch.Tensor]]:
    """The most compact exact encoding of one tensor: (spec, stored tensors)."""
    flat = value.reshape(-1)
    if flat.numel() and bool((flat == flat[0]).all()) and (not value.is_floating_point() or
                                                          not torch.isnan(flat[0])):
        v = flat[0].item()
        return {"kind": "fill", "dtype": str(value.dtype).removeprefix("torch."), "shape": list(value.shape),
                "value": float(v).hex() if value.is_floating_point() else int(v)}, {}
    if grid is not None and value.dtype == torch.float32:
        scales, zeros, itype = grid
        shape = [-1] + [1] * (value.dim() - 1) if scales.size > 1 else [1] * value.dim()
        s = torch.from_numpy(scales).double().reshape(shape)
        z = torch.from_numpy(zeros).double().reshape(shape)
        q = torch.round(value.double() / s + z)
        info = torch.iinfo(itype)
        if bool((q >= info.min).all()) and bool((q <= info.max).all()):
            stored = {key + ".q": q.to(itype).contiguous(), key + ".scale": torch.from_numpy(scales).clone(),
                      key + ".zero": torch.from_numpy(zeros).clone()}
            spec = {"kind": "grid"}
            if torch.equal(decode(key, spec, stored).view(torch.int32), value.view(torch.int32)):
                return spec, stored
    if value.dtype == torch.float32 and torch.equal(value.half().float().view(torch.int32),
                                                    value.view(torch.int32)):
        return {"kind": "raw", "dtype": "float32"}, {key: value.half().contiguous()}
    return {"kind": "raw", "dtype": str(value.dtype).removeprefix("torch.")}, {key: value.contiguous()}


def build(src: Path, name: str, arch: str, labels: list[str]):
    """(encoding, stored tensors, meta dict, imported model, kinds)."""
    model = import_tflite(src, arch, labels=labels)
    hints = grids(Graph(src), model)
    encoding, stored, kinds = {}, {}, Counter()
    for key, value in model.state_dict().items():
        spec, tensors = encode(key, value.detach().cpu(), hints.get(key))
        encoding[key] = spec
        stored.update(tensors)
        kinds[spec["kind"] if spec["kind"] != "raw" else f"raw {next(iter(tensors.values())).dtype}"] += 1
    meta = model.meta.with_(weights=BUILTIN_PREFIX + name).to_dict()
    return encoding, stored, meta, model, kinds


def _sort_header(path: Path) -> None:
    """safetensors writes its metadata in hash order: rewrite the header sorted, for identical files."""
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.dumps(json.loads(data[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + data[8 + n:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="folder with Google's published .tflite MobileNets")
    parser.add_argument("--labels", type=Path, default=None, help="[default: SRC/imagenet_labels.txt]")
    parser.add_argument("--out", type=Path, default=ROOT / "edgekit" / "data" / "weights")
    args = parser.parse_args(argv)
    from safetensors.torch import save_file

    labels = read_labels(args.labels or args.src / "imagenet_labels.txt")
    args.out.mkdir(parents=True, exist_ok=True)
    entries = []
    for source, (name, arch) in MODELS.items():
        path = args.src / source
        encoding, stored, meta, model, kinds = build(path, name, arch, labels)
        out = args.out / f"{name}.safetensors"
        save_file(stored, str(out), metadata={META_KEY: json.dumps(meta, sort_keys=True),
                                              ENCODING_KEY: json.dumps(encoding, sort_keys=True)})
        _sort_header(out)
        out.chmod(0o644)
        from edgekit.models.builtin import decode_file

        state, _ = decode_file(out)  # the file as written, not the tensors in memory
        reference = model.state_dict()
        assert state.keys() == reference.keys(), name
        for key, value in reference.items():
            if not (state[key].dtype == value.dtype and torch.equal(state[key], value)
                    and (not value.is_floating_point()
                         or torch.equal(state[key].view(torch.int32), value.view(torch.int32)))):
                raise SystemExit(f"{name}: {key} does not decode bit-for-bit")
        m = model.meta
        entries.append({"name": name, "arch": arch, "width": m.width, "resolution": m.resolution,
                        "file": out.name, "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
                        "bytes": out.stat().st_size, "source": source,
                        "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
        print(f"{name}: {out.stat().st_size:,} bytes, {len(reference)} tensors bit-exact "
              f"({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})")
    (args.out / INDEX_NAME).write_text(json.dumps({"format": 1, "models": entries}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
