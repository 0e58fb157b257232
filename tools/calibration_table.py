"""int8 accuracy per backend x calibration method, on a labelled set, with calibration wall time.

For one model (an edgekit checkpoint): build every (backend, method) int8 artifact from the same
calibration images with the x86 target's build options, then evaluate each one and the float model
on every labelled image: top-1, agreement with the float model (with its 95% interval) and SQNR of
the logits. Prints a Markdown table; --json writes the rows.

    python tools/imagenet_sample_tsv.py ../shared/data/imagenet-sample \
        ../shared/data/imagenet-classes.tsv > /tmp/in500.tsv
    python tools/calibration_table.py --weights v2.pth --data /tmp/in500.tsv \
        --calib ../shared/data/imagenet-sample --calib-size 200
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgekit.backends.base import ConvertOptions, get_backend
from edgekit.calibration import load_calibration
from edgekit.datasets import load_images, load_labelled
from edgekit.models.loading import load_model
from edgekit.parity import compare
from edgekit.source import ModelSource
from edgekit.targets import load_target

METHODS = {
    "onnxruntime": ("minmax", "percentile", "entropy"),
    "openvino": ("minmax", "mean_minmax", "percentile"),
    "tflite": ("minmax", "mse", "percentile"),
}


def agreement_interval(p: float, n: int) -> float:
    """Half-width of the normal-approximation 95% interval of a proportion."""
    return 1.96 * math.sqrt(max(p * (1 - p), 1e-12) / n)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True, help="labelled images: TSV or class folders")
    ap.add_argument("--calib", required=True)
    ap.add_argument("--calib-size", type=int, default=200)
    ap.add_argument("--target", default="x86")
    ap.add_argument("--backends", default="onnxruntime,openvino,tflite")
    ap.add_argument("--methods", default=None, help="comma list, default: each backend's")
    ap.add_argument("--activation-type", choices=("int8", "uint8"), default=None,
                    help="override the target's (OpenVINO: uint8 = NNCF's MIXED preset)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    model = load_model(None, args.weights)
    source = ModelSource.from_module(model)
    meta = source.meta
    pre = meta.preprocessing
    labelled = load_labelled(args.data, list(meta.labels) if meta.labels else None, meta.num_classes)
    images, targets, _ = load_images(labelled, pre)
    reference = source.reference(images)
    float_top1 = float(np.mean(reference.argmax(1) == targets))
    calibration = load_calibration(args.calib, pre, args.calib_size)
    target = load_target(args.target)
    print(f"{meta.arch} {meta.weights}: fp32 top-1 {float_top1:.1%} on {len(targets)} images; "
          f"calibration {len(calibration)} images from {calibration.source}", file=sys.stderr)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.backends.split(","):
            backend = get_backend(name)
            build = next(b for b in target.builds if b.backend == name)
            methods = args.methods.split(",") if args.methods else METHODS[name]
            for method in methods:
                options = ConvertOptions(io_dtype=build.io_dtype, layout=build.layout,
                                         activation_type=args.activation_type or build.activation_type,
                                         weight_type=build.weight_type, per_channel=build.per_channel,
                                         calibration_method=method)
                start = time.perf_counter()
                artifact = backend.convert(source, "int8", replace(calibration, method=method),
                                           Path(tmp) / backend.filename(f"{name}_{method}", "int8"), options)
                seconds = time.perf_counter() - start
                logits = backend.load(artifact).run(images)
                parity = compare(reference, logits)
                top1 = float(np.mean(logits.argmax(1) == targets))
                row = {"backend": name, "method": method, "activation_type": options.activation_type, "top1": top1, "fp32_top1": float_top1,
                       "drop_points": 100 * (float_top1 - top1),
                       "agreement": parity.top1_agreement,
                       "agreement_ci95": agreement_interval(parity.top1_agreement, len(targets)),
                       "sqnr_db": parity.sqnr_db, "convert_seconds": seconds,
                       "n": len(targets), "calib_images": len(calibration)}
                rows.append(row)
                print(f"{name} {method}: top-1 {top1:.1%} agreement {parity.top1_agreement:.1%} "
                      f"SQNR {parity.sqnr_db:.1f} dB, {seconds:.1f} s", file=sys.stderr)

    print(f"\n{meta.arch}: fp32 top-1 {float_top1:.1%}, n = {len(targets)}\n")
    print("| backend | method | activations | int8 top-1 | drop (points) | agreement (95% CI) | SQNR dB | build s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {r['method']} | {r['activation_type']} | {r['top1']:.1%} | {r['drop_points']:+.1f} | "
              f"{r['agreement']:.1%} ± {r['agreement_ci95']:.1%} | {r['sqnr_db']:.1f} | "
              f"{r['convert_seconds']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
