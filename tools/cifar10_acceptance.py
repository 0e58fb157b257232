"""Issue 21's acceptance run, measured: CIFAR-10 from the built-in ImageNet weights.

    python tools/cifar10_acceptance.py [--workdir DIR] [--keep]

1. extract ../shared/data/cifar10/{train,test}.tar into a temporary folder;
2. 500 training images per class (seeded), 5,000 in all -> `edgekit train --val-split 0` (every
   one of them trains; no other image is used: the last epoch is kept);
3. `edgekit eval` of the checkpoint on all 10,000 test images: needs >= 85% top-1, train + eval
   within 15 minutes of wall time;
4. `edgekit convert --target rpi4 --calib <train images>` of the checkpoint, `edgekit eval` of its
   TFLite and ONNX Runtime fp32/int8 artifacts on the test set (int8 within 1 point of fp32);
5. the labels in the manifest and in `edgekit demo` output (headless, an image folder).

Each timing is printed with `uptime`'s load average: on a shared machine the times are inflated.
Exit 0 when every criterion holds, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARS = ROOT.parent / "shared" / "data" / "cifar10"
PER_CLASS, SEED = 500, 0
MIN_TOP1, MAX_SECONDS, MAX_INT8_DROP = 0.85, 15 * 60, 0.01


def load() -> str:
    """`uptime`'s load averages (1, 5, 15 min)."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average: ")[-1]


def edgekit(*args, capture: bool = False) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "edgekit", *map(str, args)]
    print("$ edgekit " + " ".join(map(str, args)), f"   [load before: {load()}]", flush=True)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(cmd, check=True, text=True, env=env,
                         stdout=subprocess.PIPE if capture else None)
    seconds = time.perf_counter() - start
    print(f"  -> {seconds:.1f} s   [load after: {load()}]", flush=True)
    return seconds, out.stdout or ""


def subset(train_dir: Path, work: Path) -> Path:
    """PER_CLASS seeded training images of each class, as a TSV (path<TAB>class); also a folder
    of them (links) for --calib."""
    rng = random.Random(SEED)
    rows = []
    for cls in sorted(p.name for p in train_dir.iterdir() if p.is_dir()):
        files = sorted(rng.sample(sorted((train_dir / cls).iterdir()), PER_CLASS))
        rows += [f"{f}\t{cls}" for f in files]
        (work / "calib" / cls).mkdir(parents=True, exist_ok=True)
        for f in files:
            link = work / "calib" / cls / f.name
            if not link.exists():
                link.symlink_to(f)
    (work / "train.tsv").write_text("\n".join(rows) + "\n")
    return work / "train.tsv"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="Keep the work folder.")
    ap.add_argument("--model", default="mobilenet_v3_small")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--fine-tune", type=int, default=9)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=8)
    args = ap.parse_args()
    if not (TARS / "train.tar").is_file():
        print(f"error: {TARS / 'train.tar'} not found", file=sys.stderr)
        return 2
    work = args.workdir or Path(tempfile.mkdtemp(prefix="edgekit-cifar10-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        for split in ("train", "test"):
            if not (work / split).is_dir():
                with tarfile.open(TARS / f"{split}.tar") as tar:
                    tar.extractall(work, filter="data")
        train_tsv = subset(work / "train", work)
        ckpt = work / "cifar10.pth"
        t_train, out = edgekit("train", "--data", train_tsv, "--val-split", "0", "--model", args.model,
                               "--resolution", args.resolution, "--fine-tune", args.fine_tune,
                               "--views", args.views, "--epochs", args.epochs, "--out", ckpt,
                               "--cache-dir", work / "cache", "--json", capture=True)
        trained = json.loads(out)
        print(f"trained on {trained['train_images']} images, crop {trained['crop']}; features "
              f"{trained['extract_images_per_second']:.0f} images/s ({trained['runtime']}), training "
              f"{trained['train_images_per_second']:.0f} images/s", flush=True)
        t_eval, out = edgekit("eval", ckpt, "--data", work / "test", "--json", capture=True)
        top1 = json.loads(out)[0]["top1"]
        print(f"checkpoint: top-1 {top1:.2%} on {json.loads(out)[0]['n']} test images; train {t_train:.0f} s "
              f"+ eval {t_eval:.0f} s = {t_train + t_eval:.0f} s", flush=True)
        build = work / "rpi4"
        edgekit("convert", "--target", "rpi4", "--weights", ckpt, "--calib", work / "calib", "--out", build)
        _, out = edgekit("eval", build, ckpt, "--data", work / "test", "--json", capture=True)
        rows = json.loads(out)
        for r in rows:
            print(f"  {Path(r['path']).name:28s} {r['backend']:12s} {r['precision']:5s} top-1 {r['top1']:.2%}"
                  + (f"  agreement {r['agreement_with_float']:.2%}" if r["agreement_with_float"] is not None else ""))
        manifest = json.loads((build / "manifest.json").read_text())
        labels = manifest["model"]["labels"]
        print("manifest labels:", labels)
        demo_dir = work / "demo-images"
        demo_dir.mkdir(exist_ok=True)
        for cls in ("cat", "ship", "truck"):
            shutil.copy(sorted((work / "test" / cls).iterdir())[0], demo_dir / f"{cls}.jpg")
        edgekit("demo", build, "--source", demo_dir, "--headless", "--jsonl", work / "demo.jsonl",
                "--topk", "1")
        for line in (work / "demo.jsonl").read_text().splitlines():
            rec = json.loads(line)
            print(f"  demo: {Path(rec.get('file', '?')).name} -> {rec['topk'][0]}")
        ok = True
        by = {(r["backend"], r["precision"]): r["top1"] for r in rows}
        checks = [(top1 >= MIN_TOP1, f"checkpoint top-1 {top1:.2%} >= {MIN_TOP1:.0%}"),
                  (t_train + t_eval <= MAX_SECONDS, f"train + eval {t_train + t_eval:.0f} s <= {MAX_SECONDS} s"),
                  (labels == sorted(p.name for p in (work / "test").iterdir()), "manifest labels = class folders")]
        for backend in ("tflite", "onnxruntime"):
            if (backend, "fp32") in by and (backend, "int8") in by:
                drop = by[(backend, "fp32")] - by[(backend, "int8")]
                checks.append((drop <= MAX_INT8_DROP, f"{backend} int8 within 1 point of fp32 ({drop * 100:+.2f})"))
        for passed, what in checks:
            print(("PASS " if passed else "FAIL ") + what)
            ok &= passed
        return 0 if ok else 1
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
