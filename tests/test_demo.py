"""`edgekit demo`: OpenCV preprocessing vs Pillow, the threaded pipeline on a video made from the
real photos (a stand-in for a camera: there is none here), and the error paths."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgekit.preprocessing import Preprocessing, load_image

cv2 = pytest.importorskip("cv2", reason="the demo needs the 'demo' extra (opencv-python-headless)")

from edgekit.cli.main import main as cli_main  # noqa: E402
from edgekit.demo import DemoOptions, FramePreprocessor, load_classifier, run_demo  # noqa: E402
from edgekit.demo.pipeline import softmax, top_k  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PHOTOS = DATA / "photos"
FRAMES_PER_PHOTO = 8
GUI_CV2 = Path(os.environ.get("EDGEKIT_GUI_CV2", Path(__file__).resolve().parents[1] / ".venv" / "cv2-gui"))  # opencv-python, apart


def _photos() -> list[Path]:
    if not PHOTOS.is_dir():
        pytest.skip(f"needs {PHOTOS} (../shared/data is only on development machines and CI)")
    return sorted(p for p in PHOTOS.iterdir() if p.suffix in (".jpg", ".bmp"))


def write_video(path: Path, photos: list[Path], per_photo: int, fourcc: str = "MJPG",
                fps: float = 10.0) -> int:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (640, 480))
    assert writer.isOpened()
    n = 0
    for p in photos:
        frame = cv2.resize(cv2.imread(str(p)), (640, 480), interpolation=cv2.INTER_AREA)
        for _ in range(per_photo):
            writer.write(frame)
            n += 1
    writer.release()
    return n


def count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open"
    n = 0
    while cap.read()[0]:
        n += 1
    return n


def expected_classes() -> dict[str, set[str]]:
    """Clear-cut photos -> acceptable top-1 names (the reference, plus alternatives in brackets)."""
    out = {}
    for line in (PHOTOS / "reference-top1.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, top1, _score, clear = line.split("\t")
        if not clear.startswith("yes"):
            continue
        names = {top1.lower()}
        extra = re.search(r"\((.*)\)", clear)
        if extra:
            text = extra.group(1).replace("any of", "")
            names |= {n.strip().lower() for n in re.split(r",| or ", text) if n.strip()}
        out[name] = names
    return out


def synonyms(label: str) -> set[str]:
    return {s.strip().lower() for s in label.split(",")}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """The real V2 (Google's weights) as a checkpoint and an ONNX Runtime folder, and a 640x480
    video with each photo for a few frames."""
    pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")
    photos = _photos()
    from edgekit.convert import convert
    from edgekit.models.importers import import_tflite
    from edgekit.models.weights import save_checkpoint

    tmp = tmp_path_factory.mktemp("demo")
    labels = (DATA / "models" / "imagenet_labels.txt").read_text().splitlines()
    model = import_tflite(DATA / "models" / "mobilenet_v2_1.0_224_quant.tflite", "mobilenet_v2",
                          labels=labels)
    ckpt = save_checkpoint(model, tmp / "v2.pth")
    target = tmp / "ort.yaml"
    target.write_text(yaml.safe_dump({
        "name": "ort", "description": "ONNX Runtime only", "cpu": {"arch": "x86_64", "cores": 2},
        "builds": [{"backend": "onnxruntime", "precisions": ["fp32"], "why": "test"}]}))
    convert(str(target), weights=str(ckpt), precision="fp32", out=tmp / "ort", calib_size=4)
    video = tmp / "photos.avi"
    n = write_video(video, photos, FRAMES_PER_PHOTO)
    return {"tmp": tmp, "ckpt": ckpt, "folder": tmp / "ort", "video": video, "frames": n,
            "photos": photos}


def run_cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit.cli.main", "demo", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=120, **kw)


def cli_inprocess(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["demo", *map(str, args)])
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


# ---------------------------------------------------------------------------------------------
# Preprocessing: OpenCV frames give what Preprocessing.apply (Pillow) gives


PREPROCESSINGS = [
    Preprocessing.tensorflow(224),  # crop 87.5%, x / 127.5 - 1
    Preprocessing(size=224, resize=0, mean=(0.5,) * 3, std=(0.5,) * 3),  # stretch
    Preprocessing.torchvision(224),  # shorter side 256, centre crop
    Preprocessing(size=96, resize=110, interpolation="bicubic"),
    Preprocessing(size=128, resize=0, interpolation="nearest", channel_order="BGR", layout="NHWC"),
]


@pytest.mark.parametrize("pre", PREPROCESSINGS, ids=lambda p: f"{p.size}-{p.resize}-{p.interpolation}")
def test_frame_preprocessing_matches_pillow(pre):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
              rng.integers(0, 256, (931, 517, 3), dtype=np.uint8),  # tall: Pillow may resize rows first
              rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)]  # upscaling
    if PHOTOS.is_dir():
        images += [load_image(p) for p in sorted(PHOTOS.glob("*.jpg"))[:3]]
    frames = FramePreprocessor(pre)
    step = 1 / (255 * min(pre.std))  # one uint8 level in model units
    for rgb in images:
        expected = pre.apply(rgb)
        got = frames(np.ascontiguousarray(rgb[..., ::-1]))  # OpenCV frames are BGR
        assert got.shape == expected.shape and got.dtype == np.float32
        # the same pixels (bit-exact resampling); only float rounding of the scaling remains
        assert np.abs(got - expected).max() < 0.01 * step


def test_softmax_and_background_output():
    logits = np.array([5.0, 1.0, 3.0, 2.0])
    p = softmax(logits)
    assert abs(p.sum() - 1) < 1e-9 and p.argmax() == 0
    assert top_k(p, 2) == [(0, pytest.approx(p[0])), (2, pytest.approx(p[2]))]
    assert [i for i, _ in top_k(p, 2, skip=1)] == [2, 3]  # output 0 = TF's "background"
    probs = np.array([0.1, 0.6, 0.3])
    assert np.allclose(softmax(probs), probs)  # a model that ends in softmax is left alone


# ---------------------------------------------------------------------------------------------
# The demo on a video


def test_demo_on_video_headless(assets, tmp_path):
    out_video, jsonl, summary_path = tmp_path / "annotated.mp4", tmp_path / "p.jsonl", tmp_path / "s.json"
    proc = run_cli(assets["folder"], "--source", assets["video"], "--headless", "--output", out_video,
                   "--jsonl", jsonl, "--json-summary", summary_path, "--topk", "3")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    n = assets["frames"]
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(n))  # every frame of a file, in order
    assert set(lines[0]) == {"frame", "time_ms", "latency_ms", "topk"}
    assert lines[1]["time_ms"] == pytest.approx(100.0, abs=1)  # media time at 10 fps
    for line in lines:
        assert len(line["topk"]) == 3 and set(line["topk"][0]) == {"label", "index", "score"}
        scores = [t["score"] for t in line["topk"]]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001
    # the expected class on every frame of each clear-cut photo
    names = [p.name for p in assets["photos"]]
    for photo, wanted in expected_classes().items():
        k = names.index(photo)
        frames = lines[k * FRAMES_PER_PHOTO:(k + 1) * FRAMES_PER_PHOTO]
        got = [f["topk"][0]["label"] for f in frames]
        assert all(synonyms(g) & wanted for g in got), f"{photo}: {got} not in {wanted}"
    bird = lines[names.index("bird.bmp") * FRAMES_PER_PHOTO]["topk"][0]
    assert bird["label"] == "chickadee" and bird["index"] == 19  # ImageNet index: background dropped
    # the annotated video: every frame, readable
    assert count_frames(out_video) == n
    assert not list(tmp_path.glob(".*partial*"))
    # the summary: printed and as JSON, and consistent with the JSON lines
    s = json.loads(summary_path.read_text())
    assert s["frames"] == s["captured"] == s["frames_written"] == n
    assert s["dropped"] == 0 and s["undecodable"] == 0 and s["ended"] == "end of stream"
    assert s["backend"] == "onnxruntime" and s["precision"] == "fp32"
    assert "only artifact" in s["choice"]
    lat = [line["latency_ms"] for line in lines]
    inf = s["inference_ms"]
    assert inf["mean"] == pytest.approx(np.mean(lat), abs=0.01)
    assert inf["p50"] == pytest.approx(np.percentile(lat, 50), abs=0.01)
    assert inf["p50"] <= inf["p90"]
    assert s["inference_fps"] == pytest.approx(1000 / inf["mean"], rel=1e-3)
    assert s["fps"] == pytest.approx((n - 1) / s["seconds"], rel=1e-3)
    assert s["overhead"]["ms_per_frame"] == pytest.approx(1000 / s["fps"] - inf["mean"], abs=0.01)
    assert s["overhead"]["fps_ratio"] == pytest.approx(s["fps"] / s["inference_fps"], abs=1e-3)
    assert all(s["stages_ms"][k] > 0 for k in ("decode", "preprocess", "inference", "overlay", "encode"))
    assert f"frames:     {n} classified" in proc.stdout and "end-to-end" in proc.stdout
    assert "per frame:  decode" in proc.stdout


def test_checkpoint_in_pytorch_and_headless_fallback(assets):
    messages = []
    c = load_classifier(assets["ckpt"], threads=2)
    assert c.backend == "pytorch" and c.offset == 1 and c.label(20) == "chickadee"
    summary = run_demo(c, DemoOptions(source=str(assets["video"]), max_frames=6), messages.append)
    assert summary.frames == 6 and summary.ended == "max frames" and summary.exit_code == 0
    # no window: the headless OpenCV build (or no display) -> a one-line notice, then headless
    if os.environ.get("DISPLAY") is None or "NONE" in cv2.getBuildInformation().split("GUI:")[1][:40]:
        assert any("running headless" in m for m in messages), messages


def test_folder_picks_fastest_artifact(assets, tmp_path):
    """Two artifacts: bench.json decides when it covers them; else a latency probe."""
    folder = tmp_path / "two"
    folder.mkdir()
    shutil.copy(assets["folder"] / "model_fp32.onnx", folder / "model_fp32.onnx")
    shutil.copy(assets["folder"] / "model_fp32.onnx", folder / "copy_fp32.onnx")
    manifest = json.loads((assets["folder"] / "manifest.json").read_text())
    manifest["artifacts"].append({**manifest["artifacts"][0], "path": "copy_fp32.onnx"})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    c = load_classifier(folder, threads=1)
    assert "probe" in c.reason
    (folder / "bench.json").write_text(json.dumps([
        {"artifact": str(folder / "model_fp32.onnx"), "threads": 1, "latency_ms": {"p50": 9.0}},
        {"artifact": str(folder / "copy_fp32.onnx"), "threads": 1, "latency_ms": {"p50": 4.0}},
        {"artifact": str(folder / "model_fp32.onnx"), "threads": 1, "device": "pi@rpi4",
         "latency_ms": {"p50": 1.0}}]))  # another device's result must not count
    c = load_classifier(folder, threads=1)
    assert c.path.name == "copy_fp32.onnx" and "bench.json" in c.reason


# ---------------------------------------------------------------------------------------------
# Error paths


def test_camera_that_does_not_open(assets, capsys):
    code, _, err = cli_inprocess(capsys, assets["folder"], "--source", "7", "--headless")
    assert code == 2
    assert "camera 7 did not open" in err and "tried index 7" in err
    assert "v4l2-ctl --list-devices" in err and "ls /dev/video*" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("args,message", [
    (["--source", "no-such-video.mp4"], "video file not found: no-such-video.mp4"),
    (["--source", "{video}", "--output", "out.gif"], "--output out.gif: use one of"),
])
def test_bad_input(assets, capsys, args, message):
    args = [a.format(video=assets["video"]) for a in args]
    code, _, err = cli_inprocess(capsys, assets["folder"], *args, "--headless")
    assert code == 2 and message in err and "Traceback" not in err


def test_missing_model(capsys):
    code, _, err = cli_inprocess(capsys, "no-such-folder", "--headless")
    assert code == 2 and "not found: no-such-folder" in err
    # a model name runs its built-in ImageNet weights; one without any says what to pass
    code, _, err = cli_inprocess(capsys, "mobilenet_v3_large", "--headless")
    assert code == 2 and "no built-in weights for mobilenet_v3_large; pass --weights" in err


def _corrupt_frames(src: Path, dst: Path, frames: list[int]) -> None:
    """Garble the JPEG data of some frames of an MJPG AVI, keeping the container intact."""
    data = bytearray(src.read_bytes())
    starts = [m.start() for m in re.finditer(rb"\xff\xd8\xff", bytes(data))]
    for k in frames:
        s = starts[k]
        for i in range(s + 600, s + 3000):
            data[i] = (data[i] * 7 + 13) & 0xFF
    dst.write_bytes(bytes(data))


def test_undecodable_frames_are_skipped(assets, tmp_path):
    c = load_classifier(assets["folder"])
    bad = tmp_path / "bad.avi"
    _corrupt_frames(assets["video"], bad, [20, 21, 60])
    jsonl = tmp_path / "bad.jsonl"
    s = run_demo(c, DemoOptions(source=str(bad), headless=True, jsonl=jsonl))
    n = assets["frames"]
    assert s.ended == "end of stream" and s.exit_code == 0
    assert s.undecodable >= 1 and s.frames + s.undecodable == n
    indices = [json.loads(line)["frame"] for line in jsonl.read_text().splitlines()]
    assert indices == sorted(indices) and indices[-1] == n - 1 and 20 not in indices

    truncated = tmp_path / "truncated.avi"
    raw = assets["video"].read_bytes()
    truncated.write_bytes(raw[:len(raw) // 2])
    s = run_demo(c, DemoOptions(source=str(truncated), headless=True))
    assert s.ended == "end of stream" and 0 < s.frames < n
    assert any("ended at frame" in m for m in s.notices)

    folder = tmp_path / "images"
    folder.mkdir()
    for p in assets["photos"][:3]:
        shutil.copy(p, folder / p.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    s = run_demo(c, DemoOptions(source=str(folder), headless=True))
    assert s.frames == 3 and s.undecodable == 1 and "broken.jpg" in " ".join(s.notices)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A small random 4-class model: enough for the paths that do not judge predictions."""
    from edgekit.models import create
    from edgekit.models.weights import save_checkpoint

    model = create("mobilenet_v3_small", width=0.75, resolution=96, num_classes=4,
                   labels=["cat", "cup", "rocket", "wall"])
    return save_checkpoint(model.eval(), tmp_path_factory.mktemp("tiny") / "tiny.pth")


def _image_folder(folder: Path, names: list[str]) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in names:
        cv2.imwrite(str(folder / name), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    return folder


def test_image_folder_with_no_readable_image_fails(tiny_checkpoint, tmp_path, capsys):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    code, _, err = cli_inprocess(capsys, tiny_checkpoint, "--source", folder, "--headless")
    assert code == 2 and "Traceback" not in err
    [line] = [m for m in err.splitlines() if m.startswith("error:")]
    assert f"none of the 1 image(s) in {folder} could be read: broken.jpg" in line


def test_jsonl_names_the_image_files(tiny_checkpoint, tmp_path):
    folder = _image_folder(tmp_path / "images", ["a.png", "c.jpg"])
    (folder / "b.jpg").write_bytes(b"not an image")
    jsonl = tmp_path / "p.jsonl"
    s = run_demo(load_classifier(tiny_checkpoint), DemoOptions(source=str(folder), headless=True,
                                                               jsonl=jsonl))
    assert s.exit_code == 0 and s.frames == 2 and s.undecodable == 1
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [(line["frame"], line["file"]) for line in lines] == [(0, "a.png"), (2, "c.jpg")]


@pytest.mark.parametrize("args,message", [
    (["--source", "no-such-video.mp4"], "video file not found: no-such-video.mp4"),
    (["--source", "{empty}"], "no images in"),
    (["--source", "{images}", "--output", "x.xyz"], "--output x.xyz: use one of"),
    (["--source", "{images}", "--output", "{tmp}/nodir/out.mp4"],
     "--output folder {tmp}/nodir does not exist"),
    (["--source", "{images}", "--jsonl", "{tmp}/nodir/p.jsonl"], "--jsonl folder {tmp}/nodir does not exist"),
    (["--source", "{images}", "--snapshot-dir", "{images}/a.png"],
     "--snapshot-dir {images}/a.png is a file, not a folder"),
    (["--source", "7"], "camera 7 did not open"),
])
def test_bad_source_or_output_fails_before_the_model_loads(tmp_path, capsys, monkeypatch, args, message):
    """A convert folder can take a 20-run latency probe per artifact: check the source (a camera
    too: the README says so) and the outputs first."""
    import edgekit.demo

    loaded = []
    monkeypatch.setattr(edgekit.demo, "load_classifier", lambda *a, **k: loaded.append(a))
    paths = {"empty": tmp_path / "empty", "images": _image_folder(tmp_path / "images", ["a.png"]),
             "tmp": tmp_path}
    paths["empty"].mkdir()
    (tmp_path / "some-folder").mkdir()  # a build folder: only loading it reads its manifest
    code, _, err = cli_inprocess(capsys, tmp_path / "some-folder", *[a.format(**paths) for a in args],
                                 "--headless")
    assert code == 2 and message.format(**paths) in err and "Traceback" not in err
    assert loaded == []


class FakeCamera:
    """cv2.VideoCapture stand-in: delivers ``frames`` frames, then nothing (unplugged)."""

    def __init__(self, frames: int, image: np.ndarray):
        self.left = frames
        self.image = image

    def isOpened(self):
        return self.left > 0

    def read(self):
        if self.left <= 0:
            return False, None
        self.left -= 1
        time.sleep(0.005)
        return True, self.image.copy()

    def get(self, prop):
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def set(self, prop, value):
        return True

    def release(self):
        pass


def test_camera_that_disappears_reconnects_then_gives_up(assets):
    image = cv2.resize(cv2.imread(str(assets["photos"][0])), (640, 480))
    cameras = iter([FakeCamera(10, image), FakeCamera(0, image), FakeCamera(10, image)])
    opened = []

    def opener(target, api):
        opened.append((target, api))
        return next(cameras, FakeCamera(0, image))  # then it is gone for good

    c = load_classifier(assets["folder"])
    messages = []
    s = run_demo(c, DemoOptions(source="0", headless=True, opener=opener, reconnect_attempts=3,
                                reconnect_delay=0.01), messages.append)
    assert s.ended == "source lost" and s.exit_code == 1 and "camera 0" in s.error
    assert s.reconnects == 1  # came back once, then stayed away
    assert 0 < s.frames <= 20 and s.frames + s.dropped <= 20
    assert any("reconnect attempt 3/3" in m for m in messages)
    assert all(target == 0 for target, _ in opened)


def test_ctrl_c_finalises_video(assets, tmp_path):
    out_video, jsonl = tmp_path / "stopped.mp4", tmp_path / "stopped.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "edgekit.cli.main", "demo", str(assets["folder"]),
                             "--source", str(assets["video"]), "--realtime", "--headless",
                             "--output", str(out_video), "--jsonl", str(jsonl)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if jsonl.is_file() and len(jsonl.read_text().splitlines()) >= 5:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the demo ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "ended: interrupted" in out and "Traceback" not in err
    lines = jsonl.read_text().splitlines()
    assert 5 <= len(lines) < assets["frames"]
    assert count_frames(out_video) == len(lines)  # finalised: playable, every frame shown


# ---------------------------------------------------------------------------------------------
# The window, under a virtual display


def _gui_cv2() -> Path:
    """opencv-python (GUI build) in a folder of its own, put first on PYTHONPATH for one
    subprocess: it must not be installed beside opencv-python-headless (both are ``cv2``)."""
    if not (GUI_CV2 / "cv2").is_dir():
        pytest.skip(f"needs OpenCV's GUI build in {GUI_CV2} (`make setup` installs it there)")
    return GUI_CV2


def test_window_under_xvfb_snapshot(assets, tmp_path):
    if shutil.which("xvfb-run") is None:
        pytest.skip("needs xvfb-run (Debian: apt-get install xvfb xauth)")
    gui = _gui_cv2()
    env = {**os.environ, "PYTHONPATH": str(gui), "EDGEKIT_DEMO_KEYS": "s", "QT_QPA_FONTDIR": "/usr/share/fonts"}
    env.pop("DISPLAY", None)
    snaps = tmp_path / "snaps"
    proc = subprocess.run(["xvfb-run", "-a", sys.executable, "-m", "edgekit.cli.main", "demo",
                           str(assets["folder"]), "--source", str(assets["video"]), "--max-frames", "12",
                           "--snapshot-dir", str(snaps)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "running headless" not in proc.stderr  # a real window was opened
    [png] = list(snaps.glob("edgekit-demo-*.png"))
    assert png.stat().st_size > 10_000
    image = cv2.imread(str(png))
    assert image is not None and image.shape == (480, 640, 3)


# ---------------------------------------------------------------------------------------------
# Using a build: thread bounds, outputs that would overwrite inputs, the manifest's sha256


@pytest.fixture(scope="module")
def tiny_build(tiny_checkpoint, tmp_path_factory):
    """The tiny model as an ONNX Runtime build with fp32 and int8 artifacts."""
    pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")
    from edgekit.convert import convert

    tmp = tmp_path_factory.mktemp("tiny-build")
    target = tmp / "ort.yaml"
    target.write_text(yaml.safe_dump({
        "name": "ort", "description": "d", "cpu": {"arch": "x86_64", "cores": 2},
        "builds": [{"backend": "onnxruntime", "precisions": ["fp32", "int8"], "why": "test"}]}))
    convert(str(target), weights=str(tiny_checkpoint), out=tmp / "out", calib_size=4, check=False)
    return tmp / "out"


def test_thread_count_is_bounded(tmp_path, capsys):
    t0 = time.monotonic()
    code, _, err = cli_inprocess(capsys, tmp_path / "m.pth", "--threads", "100000", "--headless",
                                 "--source", tmp_path / "none.mp4")
    assert code == 2 and "--threads 100000 is more than" in err and "Traceback" not in err
    assert time.monotonic() - t0 < 30
    from edgekit.errors import InputError

    with pytest.raises(InputError, match="is more than"):
        load_classifier(tmp_path / "m.pth", threads=100000)


def _video(path: Path, frames: int = 3) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path


@pytest.mark.parametrize("args,message", [
    (["--source", "{video}", "--output", "{video}"], "would overwrite the input"),
    (["--source", "{images}", "--jsonl", "{images}/a.png"], "would overwrite the input"),
    (["--source", "{images}", "--jsonl", "{model}"], "would overwrite the input"),
    (["--source", "{images}", "--output", "{tmp}/x.mp4", "--jsonl", "{tmp}/x.mp4"], "is also --output"),
    (["--source", "{images}", "--jsonl", "{tmp}/p.jsonl", "--json-summary", "{tmp}/link"],
     "is also --jsonl"),
    (["--source", "{images}", "--jsonl", "{build}/manifest.json"], "inside the build folder"),
    (["--source", "{images}", "--json-summary", "{build}/model_fp32.onnx"], "inside the build folder"),
])
def test_outputs_never_overwrite_inputs(tiny_checkpoint, tiny_build, tmp_path, capsys, args, message):
    import shutil

    build = shutil.copytree(tiny_build, tmp_path / "build")
    model = shutil.copy(tiny_checkpoint, tmp_path / "model.pth")
    paths = {"video": _video(tmp_path / "v.avi"), "images": _image_folder(tmp_path / "images", ["a.png"]),
             "tmp": tmp_path, "build": build, "model": model}
    (tmp_path / "p.jsonl").write_text("old")
    (tmp_path / "link").symlink_to(tmp_path / "p.jsonl")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, _, err = cli_inprocess(capsys, model, *[a.format(**paths) for a in args], "--headless")
    assert code == 2 and message in err and "Traceback" not in err, err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_tampered_artifact_is_refused_unless_no_verify(tiny_build, tmp_path, capsys):
    import shutil

    build = shutil.copytree(tiny_build, tmp_path / "build")
    (build / "model_int8.onnx").write_bytes((build / "model_fp32.onnx").read_bytes())
    images = _image_folder(tmp_path / "images", ["a.png", "b.png"])
    for target, extra in ((build, ["--precision", "int8"]), (build / "model_int8.onnx", [])):
        code, _, err = cli_inprocess(capsys, target, *extra, "--source", images, "--headless")
        assert code == 2 and "Traceback" not in err
        assert "model_int8.onnx does not match the sha256 in" in err and "--no-verify" in err
    code, out, err = cli_inprocess(capsys, build, "--precision", "int8", "--source", images,
                                   "--headless", "--no-verify")
    assert code == 0, err
    # said once: when the model loads (not again in the summary)
    assert (out + err).count("model:") == 1 and (out + err).count("chosen:") == 1


def test_summary_of_a_tiny_run_reports_no_overhead():
    """2 frames gave "-6.02 ms per frame beyond inference" and "145% of inference-only FPS"."""
    from edgekit.demo.summary import DemoSummary

    s = DemoSummary.build(frames=2, seconds=0.014, infer_ms=[20.0, 20.0], stages={}, latency_ms=[30.0, 31.0],
                          source="x", model="m", backend="onnxruntime", precision="fp32", threads=None,
                          runtime={}, choice="", captured=2, dropped=0, undecodable=0, reconnects=0,
                          ended="end of stream")
    assert s.overhead == {"ms_per_frame": None, "fps_ratio": None}
    text = "\n".join(s.lines())
    assert "%" not in text and "overhead:   not measured (2 frames; it takes at least 10)" in text


def test_decoder_warnings_do_not_leak_to_stderr(tiny_checkpoint, tmp_path):
    """libjpeg prints "Corrupt JPEG data: premature end of data segment" straight to fd 2."""
    folder = _image_folder(tmp_path / "images", ["a.jpg"])
    data = (folder / "a.jpg").read_bytes()
    big = cv2.imencode(".jpg", np.random.default_rng(1).integers(0, 256, (240, 320, 3), dtype=np.uint8))[1]
    (folder / "b.jpg").write_bytes(big.tobytes()[:len(big) * 2 // 3] + b"\xff\xd9")  # cut short
    assert data
    proc = run_cli(tiny_checkpoint, "--source", folder, "--headless")
    assert proc.returncode == 0, proc.stderr
    assert "JPEG" not in proc.stderr and "premature" not in proc.stderr.lower(), proc.stderr
