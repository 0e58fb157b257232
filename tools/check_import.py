"""Compare MobileNets imported into PyTorch with the TFLite files they came from.

For each model in ../shared/data/models: top-1 of the imported PyTorch model and of the .tflite
(run in LiteRT) on the ImageNet sample photos, and how often their top-1 predictions agree — by
argmax, and counting a tie at the top of the quantized file's output (its argmax is then just the
lowest class index) as agreement with any of the tied classes.

    python tools/check_import.py [--limit N] [--only SUBSTRING]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edgekit.models.importers import import_keras, import_tflite
from edgekit.preprocessing import Preprocessing, load_image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MODELS = DATA / "models"
VWW_PREPROCESSING = Preprocessing(size=96, resize=0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    tflite: str  # the reference run in LiteRT
    arch: str = "mobilenet_v1"
    keras: str | None = None  # import this .h5 instead of the .tflite
    preprocessing: Preprocessing | None = None

    def load(self) -> torch.nn.Module:
        if self.keras:
            return import_keras(MODELS / self.keras, self.arch, preprocessing=self.preprocessing)
        return import_tflite(MODELS / self.tflite, self.arch, preprocessing=self.preprocessing)


CASES = (
    Case("mobilenet_v1_0.25_128_quant", "mobilenet_v1_0.25_128_quant.tflite"),
    Case("mobilenet_v1_0.5_160_quant", "mobilenet_v1_0.5_160_quant.tflite"),
    Case("mobilenet_v1_0.75_192_quant", "mobilenet_v1_0.75_192_quant.tflite"),
    Case("mobilenet_v2_1.0_224_quant", "mobilenet_v2_1.0_224_quant.tflite", "mobilenet_v2"),
    Case("mobilenet_v3_small_1.0_224.uint8", "mobilenet_v3_small_1.0_224.uint8.tflite",
         "mobilenet_v3_small"),
    Case("tf2_mobilenet_v2_1.0_224_ptq (int8)", "tf2_mobilenet_v2_1.0_224_ptq.tflite",
         "mobilenet_v2"),
    Case("vww_96_float (tflite)", "vww_96_float.tflite", preprocessing=VWW_PREPROCESSING),
    Case("vww_96.h5 (keras)", "vww_96_float.tflite", keras="vww_96.h5",
         preprocessing=VWW_PREPROCESSING),
)


def imagenet_sample(limit: int | None = None) -> list[tuple[Path, int]]:
    """(photo, ImageNet class index) for the sample photos, sorted by file name."""
    wnid_to_index = {}
    for line in (DATA / "imagenet-classes.tsv").read_text().splitlines():
        index, wnid, _name = line.split("\t")
        wnid_to_index[wnid] = int(index)
    photos = sorted((DATA / "imagenet-sample").glob("*.JPEG"))[:limit]
    return [(p, wnid_to_index[p.name.split("_")[0]]) for p in photos]


@torch.no_grad()
def run_torch(model: torch.nn.Module, images: list[np.ndarray], batch: int = 50) -> np.ndarray:
    pre = model.meta.preprocessing
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(np.stack([pre.apply(im) for im in images[i:i + batch]]))
        out.append(model.eval()(x).numpy())
    return np.concatenate(out)


def tflite_input(pixels: np.ndarray, detail: dict, preprocessing: Preprocessing) -> np.ndarray:
    """The file's own input contract: uint8 files take the pixel, int8 files pixel - 128 (their
    input quantization is edgekit's preprocessing); float files take the preprocessed values."""
    if detail["dtype"] == np.uint8:
        return pixels[None]
    if detail["dtype"] == np.int8:
        return (pixels.astype(np.int16) - 128).astype(np.int8)[None]
    return dataclasses.replace(preprocessing, layout="NHWC").normalize(pixels)[None]


def run_tflite(path: Path, images: list[np.ndarray], preprocessing: Preprocessing) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    results = []
    for image in images:
        interpreter.set_tensor(inp["index"], tflite_input(preprocessing.geometry(image), inp, preprocessing))
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"])[0].astype(np.float32))
    return np.stack(results)


def compare(case: Case, images: list[np.ndarray], classes: np.ndarray) -> dict:
    model = case.load()
    torch_top = run_torch(model, images).argmax(1)
    tflite_out = run_tflite(MODELS / case.tflite, images, model.meta.preprocessing)
    tflite_top = tflite_out.argmax(1)
    # A quantized file's outputs sit on a grid (uint8 softmax: 1/256) and its top classes can
    # tie; argmax then names the lowest index. "ties" counts agreement with any tied top class.
    tied_top = tflite_out[np.arange(len(torch_top)), torch_top] == tflite_out.max(1)
    row = {"agreement": float(np.mean(torch_top == tflite_top) * 100),
           "agreement_ties": float(np.mean(tied_top) * 100),
           "tflite_ties": float(np.mean((tflite_out == tflite_out.max(1, keepdims=True)).sum(1) > 1) * 100)}
    if model.meta.num_classes == 1001:  # background at 0: ImageNet class k is output k + 1
        row["torch_top1"] = float(np.mean(torch_top == classes + 1) * 100)
        row["tflite_top1"] = float(np.mean(tflite_top == classes + 1) * 100)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="use the first N photos only")
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    args = parser.parse_args(argv)
    if not MODELS.is_dir():
        print(f"{DATA} not found: nothing to check", file=sys.stderr)
        return 1
    sample = imagenet_sample(args.limit)
    images = [load_image(p) for p, _ in sample]
    classes = np.array([c for _, c in sample])
    print(f"{len(images)} photos from {DATA / 'imagenet-sample'}")
    print(f"{'model':36s} {'torch top-1':>11s} {'tflite top-1':>12s} {'agreement':>9s} "
          f"{'tflite top tied':>15s} {'agree (ties)':>12s} {'time':>6s}")
    for case in CASES:
        if args.only not in case.name:
            continue
        start = time.time()
        row = compare(case, images, classes)
        fmt = lambda key: f"{row[key]:.1f}%" if key in row else "n/a"  # noqa: E731
        print(f"{case.name:36s} {fmt('torch_top1'):>11s} {fmt('tflite_top1'):>12s} "
              f"{fmt('agreement'):>9s} {fmt('tflite_ties'):>15s} {fmt('agreement_ties'):>12s} "
              f"{time.time() - start:5.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
