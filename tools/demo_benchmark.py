"""How close `edgekit demo` gets to inference-only speed: per-stage breakdown and end-to-end FPS on
a 640x480 video, headless, without and with recording (--output).

    python tools/demo_benchmark.py [--frames 300] [--threads 1] [--repeat 3] [--json out.json]

Cases: MobileNetV2 fp32 ONNX Runtime (the >= 10 ms target of issue 6 when the CPU is that slow),
PyTorch fp32 (always >= 10 ms here), and ONNX Runtime int8 (U8S8, ~1-2 ms: the "fast int8" case).
Weights: Google's V2 from ../shared/data/models when present, else seeded random weights (the
timing is the same). The video is made from ../shared/data/photos (or noise when absent).

For each case: inference-only FPS (Session.infer on a prepared frame, same threads, in a loop),
measured right before each run of the demo pipeline on the video, headless, without and with an
MP4 recording (the load on a shared machine varies); the table shows the median run's end-to-end
FPS and its share of the inference-only FPS measured with it, the mean ms of each stage, and the thread that
bounds the frame rate (capture: decode + preprocess; inference: inference + postprocess; main:
overlay; recorder: encode). The machine has 2 cores: stages overlap, but also compete.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))


def make_video(path: Path, frames: int) -> None:
    import cv2

    photos = sorted((SHARED / "photos").glob("*.jpg")) + sorted((SHARED / "photos").glob("*.bmp"))
    rng = np.random.default_rng(0)
    images = ([cv2.resize(cv2.imread(str(p)), (640, 480), interpolation=cv2.INTER_AREA) for p in photos]
              or [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(8)])
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 480))
    for i in range(frames):
        writer.write(images[(i // 8) % len(images)])
    writer.release()


def build(work: Path) -> tuple[Path, Path]:
    """(checkpoint, convert folder with ONNX Runtime fp32 + int8)."""
    import yaml

    from edgekit.convert import convert
    from edgekit.models.loading import load_model
    from edgekit.models.weights import save_checkpoint

    ckpt = work / "v2.pth"
    if ckpt.is_file() and (work / "ort" / "manifest.json").is_file():
        return ckpt, work / "ort"  # built by an earlier run with the same --work
    tflite = SHARED / "models" / "mobilenet_v2_1.0_224_quant.tflite"
    if tflite.is_file():
        from edgekit.models.importers import import_tflite

        labels = (SHARED / "models" / "imagenet_labels.txt").read_text().splitlines()
        model = import_tflite(tflite, "mobilenet_v2", labels=labels)
    else:
        model = load_model("mobilenet_v2")
    save_checkpoint(model, ckpt)
    target = work / "ort.yaml"
    target.write_text(yaml.safe_dump({
        "name": "ort", "description": "benchmark", "cpu": {"arch": "x86_64", "cores": 2},
        "builds": [{"backend": "onnxruntime", "precisions": ["fp32", "int8"],
                    "activation_type": "uint8", "why": "U8S8 is the fast int8 on x86"}]}))
    calib = SHARED / "imagenet-sample"
    convert(str(target), weights=str(ckpt), out=work / "ort", calib_size=64,
            calib=calib if calib.is_dir() else None, check=False)
    return ckpt, work / "ort"


def inference_only(classifier, video: Path, runs: int = 150) -> float:
    """Mean ms of Session.infer on a real prepared frame."""
    import cv2

    from edgekit.demo import FramePreprocessor

    ok, frame = cv2.VideoCapture(str(video)).read()
    session = classifier.session
    x = session.prepare(FramePreprocessor(classifier.preprocessing)(frame))
    for _ in range(10):
        session.infer(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        session.infer(x)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return statistics.fmean(times)


def isolated_stages(classifier, video: Path, work: Path, n: int = 120) -> dict[str, float]:
    """Median ms per frame of each non-inference stage run alone, one thread: what the stages
    cost without competition (the machine may be shared)."""
    import cv2

    from edgekit.demo import FramePreprocessor
    from edgekit.demo.overlay import Overlay

    def timed(fn, items):
        out = []
        for item in items:
            t0 = time.perf_counter_ns()
            fn(item)
            out.append((time.perf_counter_ns() - t0) / 1e6)
        return statistics.median(out)

    cap = cv2.VideoCapture(str(video))
    frames, decode = [], []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        ok, frame = cap.read()
        decode.append((time.perf_counter_ns() - t0) / 1e6)
        if not ok:
            break
        frames.append(frame)
    pre = FramePreprocessor(classifier.preprocessing)
    overlay = Overlay(classifier.title)
    preds = [("chickadee", 0.9), ("magpie", 0.05), ("jay", 0.02), ("bulbul", 0.01), ("junco", 0.01)]
    writer = cv2.VideoWriter(str(work / "isolated.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 480))
    result = {"decode": statistics.median(decode),
              "preprocess": timed(lambda f: classifier.session.prepare(pre(f)), frames),
              "overlay": timed(lambda f: overlay.draw(f.copy(), preds, 30.0, 5.0), frames),
              "encode": timed(writer.write, frames)}
    writer.release()
    return {k: round(v, 3) for k, v in result.items()}


def threads_bound(stages: dict) -> tuple[str, float]:
    s = {k: v or 0.0 for k, v in stages.items()}
    per_thread = {"capture (decode+preprocess)": s["decode"] + s["preprocess"],
                  "inference (+postprocess)": s["inference"] + s["postprocess"],
                  "main (overlay)": s["overlay"], "recorder (encode)": s["encode"]}
    name = max(per_thread, key=per_thread.get)
    return name, per_thread[name]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="runs per setting; the median is shown")
    ap.add_argument("--work", type=Path, default=None, help="keep artifacts and videos here")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from edgekit.demo import DemoOptions, load_classifier, run_demo

    work = args.work or Path(tempfile.mkdtemp(prefix="edgekit-demo-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"building artifacts and a {args.frames}-frame 640x480 video in {work} ...", flush=True)
    ckpt, folder = build(work)
    video = work / "video.avi"
    make_video(video, args.frames)
    cases = [("ONNX Runtime fp32", folder / "model_fp32.onnx"),
             ("PyTorch fp32", ckpt),
             ("ONNX Runtime int8 (U8S8)", folder / "model_int8.onnx")]
    rows = []
    for name, path in cases:
        classifier = load_classifier(path, threads=args.threads)
        row = {"case": name, "threads": args.threads}
        alone_all = []
        for label, output in (("no_output", None), ("output", work / f"{path.stem}.mp4")):
            runs = []
            for _ in range(args.repeat):  # inference alone right before each run: the load here varies
                alone = inference_only(classifier, video)
                s = run_demo(classifier, DemoOptions(source=str(video), headless=True, output=output,
                                                     status_line=False))
                alone_all.append(alone)
                runs.append((s.fps * alone / 1000, alone, s))
            share, alone, s = sorted(runs, key=lambda r: r[0])[len(runs) // 2]  # the median run
            bound, bound_ms = threads_bound(s.stages_ms)
            row[label] = {"fps": s.fps, "inference_only_ms": round(alone, 3),
                          "inference_only_fps": round(1000 / alone, 1),
                          "share_of_inference_only": round(share, 3), "stages_ms": s.stages_ms,
                          "bound_by": bound, "bound_ms": round(bound_ms, 3), "frames": s.frames,
                          "all_shares": [round(r[0], 3) for r in runs]}
        row["isolated_stages_ms"] = isolated_stages(classifier, video, work)
        row["inference_only_ms"] = round(statistics.median(alone_all), 3)
        row["inference_only_fps"] = round(1000 / row["inference_only_ms"], 1)
        rows.append(row)
        print(f"  {name}: done", flush=True)

    print()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"640x480 MJPG video, {args.frames} frames, headless, {args.threads} inference thread(s), "
          f"median of {args.repeat} runs" + (f"; load average {load[0]:.1f} on {os.cpu_count()} CPUs"
                                            if load else ""))
    head = (f"{'case':<26} {'alone ms':>8} {'alone FPS':>9} | {'rec':<3} {'e2e FPS':>7} {'share':>6} | "
            f"{'decode':>6} {'prep':>6} {'infer':>6} {'post':>5} {'overlay':>7} {'encode':>6} | bound by")
    print(head)
    print("-" * len(head))
    for r in rows:
        for label in ("no_output", "output"):
            d = r[label]
            st = {k: (f"{v:.2f}" if v is not None else "-") for k, v in d["stages_ms"].items()}
            first = label == "no_output"
            case = r["case"] if first else ""
            alone_ms = f"{d['inference_only_ms']:.2f}"
            alone_fps = f"{d['inference_only_fps']:.1f}"
            print(f"{case:<26} {alone_ms:>8} {alone_fps:>9} | "
                  f"{'no' if first else 'yes':<3} {d['fps']:>7.1f} {d['share_of_inference_only']:>6.0%} | "
                  f"{st['decode']:>6} {st['preprocess']:>6} {st['inference']:>6} {st['postprocess']:>5} "
                  f"{st['overlay']:>7} {st['encode']:>6} | {d['bound_by']} {d['bound_ms']:.2f} ms")
    print()
    print("Each stage alone, one thread, median ms per frame (what the pipeline's threads cost without")
    print("competition), and the frame rate the slowest thread would allow on an otherwise idle machine:")
    for r in rows:
        iso = r["isolated_stages_ms"]
        threads = {"capture (decode+preprocess)": iso["decode"] + iso["preprocess"],
                   "inference": r["inference_only_ms"], "main (overlay)": iso["overlay"],
                   "recorder (encode)": iso["encode"]}
        slowest = max(threads, key=threads.get)
        cpu = sum(threads.values())
        print(f"  {r['case']:<26} decode {iso['decode']:.2f}  preprocess {iso['preprocess']:.2f}  "
              f"overlay {iso['overlay']:.2f}  encode {iso['encode']:.2f}  inference "
              f"{r['inference_only_ms']:.2f} -> slowest: {slowest} {threads[slowest]:.2f} ms "
              f"(<= {1000 / threads[slowest]:.0f} FPS); CPU per recorded frame {cpu:.2f} ms "
              f"(<= {2000 / cpu:.0f} FPS on 2 cores)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
