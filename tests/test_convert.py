import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgekit.convert import convert
from edgekit.errors import InputError, ParityError
from edgekit.manifest import Manifest

pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")


@pytest.fixture
def ort_target(tmp_path):
    path = tmp_path / "ort.yaml"
    path.write_text(yaml.safe_dump({
        "name": "ort", "description": "ONNX Runtime only", "cpu": {"arch": "x86_64", "cores": 2},
        "threads": 2, "builds": [{"backend": "onnxruntime", "precisions": ["fp32", "int8"],
                                  "activation_type": "uint8", "why": "test"}]}))
    return str(path)


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "edgekit.cli.main", *args], capture_output=True,
                          text=True, timeout=600, cwd=cwd)


def test_convert_writes_verified_manifest(tmp_path, ort_target):
    out = tmp_path / "out"
    manifest = convert(ort_target, "mobilenet_v3_small", width=0.75, resolution=128, out=out,
                       calib_size=8, weights="random")
    data = json.loads((out / "manifest.json").read_text())
    assert data["target"] == "ort" and data["model"]["name"] == "mobilenet_v3_small"
    assert data["model"]["preprocessing"]["size"] == 128
    assert data["calibration"]["n_images"] == 8 and data["calibration"]["method"] == "percentile"
    assert [(a["backend"], a["precision"]) for a in data["artifacts"]] == [
        ("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    for a in data["artifacts"]:
        assert (out / a["path"]).stat().st_size == a["size_bytes"]
        assert len(a["sha256"]) == 64 and a["runtime"]["name"] == "onnxruntime"
        assert a["parity"]["n_images"] == 8 and a["parity_ok"]
    fp32, int8 = data["artifacts"]
    assert fp32["parity"]["max_abs_diff"] < 1e-4 * max(1, fp32["parity"]["reference_max_abs"])
    assert int8["parity"]["sqnr_db"] > 10
    assert data["notices"] and "random weights" in data["notices"][0]
    assert Manifest.read(out).artifacts[1].precision == "int8"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_parity_failure_exits_nonzero(tmp_path, ort_target):
    data = yaml.safe_load(Path(ort_target).read_text())
    data["parity"] = {"fp32_max_abs_diff": 1e-12}
    Path(ort_target).write_text(yaml.safe_dump(data))
    with pytest.raises(ParityError, match=r"model_fp32\.onnx: max abs diff .* \(1e-12 scaled"):
        convert(ort_target, "mobilenet_v3_small", width=0.75, resolution=96, out=tmp_path / "o",
                precision="fp32", calib_size=2, weights="random")
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["artifacts"][0]["parity_ok"] is False


def test_plan_takes_several_backends_and_precisions():
    from edgekit.convert_plan import jobs_for as plan
    from edgekit.targets import load_target

    x86 = load_target("x86")
    jobs = plan(x86, ["fp32", "int8"], "onnxruntime, tflite")
    assert [(j.build.backend, j.precision) for j in jobs] == [
        ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("tflite", "fp32"), ("tflite", "int8")]
    assert len(plan(x86, None, ["onnxruntime", "openvino"])) == 5
    with pytest.raises(InputError, match="unknown precision 'int4'"):
        plan(x86, "int4")


def test_precision_filter_and_unknown_combination(tmp_path, ort_target):
    m = convert(ort_target, "mobilenet_v3_small", width=0.75, resolution=96, out=tmp_path / "o",
                precision="fp32", calib_size=2, weights="random")
    assert [a.precision for a in m.artifacts] == ["fp32"]
    with pytest.raises(InputError, match="builds no fp16 artifact"):
        convert(ort_target, precision="fp16", out=tmp_path / "o2")


def test_cli_convert_user_onnx(tmp_path, ort_target):
    first = convert(ort_target, "mobilenet_v3_small", width=0.75, resolution=96, out=tmp_path / "a",
                    precision="fp32", calib_size=2, weights="random")
    onnx_file = tmp_path / "a" / first.artifacts[0].path
    # Random weights and 4 images: agreement is near a coin toss (reported, not enforced on so
    # few images); minmax keeps this test about the ONNX path.
    out = run("convert", "--target", ort_target, "--model", str(onnx_file), "--out",
              str(tmp_path / "b"), "--calib-size", "4", "--calib-method", "minmax")
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert data["model"]["source"] == "onnx" and len(data["artifacts"]) == 2


@pytest.mark.parametrize("args,message", [
    (["--target", "rpi3"], "unknown target 'rpi3' (did you mean 'rpi4' or 'rpi5'?)"),
    (["--model", "mobilenet_v9"], "unknown model 'mobilenet_v9'"),
    (["--model", "missing.onnx"], "model file not found"),
    (["--weights", "nothing.pth"], "weights file not found"),
    (["--calib", "EMPTY"], "no images"),
    (["--calib", "NOIMAGES"], "none of the 2 image files"),
    (["--calib", "missing-folder"], "image folder not found"),
    (["--out", "/proc/edgekit-out"], "not writable"),
    (["--out", "AFILE"], "AFILE is a file, not a folder"),
    (["--precision", "fp16", "--backend", "onnxruntime"], "builds no onnxruntime fp16 artifact"),
    (["--backend", "onnxruntime,openvino"], "target rpi4 builds no openvino artifact"),
    (["--max-float-layers", "2"], "--max-float-layers applies with --max-accuracy-drop"),
    (["--model", "ONNX"], "executorch, tflite need(s) a PyTorch model; m is ONNX: build it with -b onnxruntime"),
])
def test_cli_bad_input(tmp_path, args, message):
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "NOIMAGES").mkdir()
    (tmp_path / "NOIMAGES" / "a.jpg").write_text("not a jpeg")
    (tmp_path / "NOIMAGES" / "b.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "AFILE").write_text("mine")
    if "ONNX" in args:
        from edgekit.backends.onnx_export import export_onnx
        from edgekit.models import create
        from edgekit.source import ModelSource

        export_onnx(ModelSource.from_module(create("mobilenet_v3_small", width=0.5, resolution=64)),
                    tmp_path / "m.onnx")
    args = [a.replace("EMPTY", str(tmp_path / "EMPTY")).replace("NOIMAGES", str(tmp_path / "NOIMAGES"))
            .replace("ONNX", str(tmp_path / "m.onnx")).replace("AFILE", str(tmp_path / "AFILE"))
            for a in args]
    out_dir = tmp_path / "o" / "rpi4"
    out = run("convert", "--out", str(out_dir), *args) if "--out" not in args else run("convert", *args)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "o").exists()  # the folders the failed run created are gone
    assert (tmp_path / "AFILE").read_text() == "mine"


def test_failed_convert_keeps_an_existing_output_folder(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "EMPTY").mkdir()
    out = run("convert", "--out", str(tmp_path / "o"), "--calib", str(tmp_path / "EMPTY"))
    assert out.returncode == 2 and "no images" in out.stderr
    assert (tmp_path / "o").is_dir() and not list((tmp_path / "o").iterdir())


def _folder_state(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_build_that_fails_late_leaves_the_previous_build_untouched(tmp_path, ort_target):
    out = tmp_path / "o"
    convert(ort_target, "mobilenet_v3_small", width=0.75, resolution=96, out=out, calib_size=4, weights="random")
    before = _folder_state(out)
    # --float-layers is checked once the fp32 artifact is built: the run fails half-way
    with pytest.raises(InputError, match="no layer named"):
        convert(ort_target, "mobilenet_v3_small", width=0.75, resolution=128, out=out, calib_size=4,
                float_layers=("no.such.layer",), weights="random")
    assert _folder_state(out) == before
    with pytest.raises(InputError, match="no layer named"):
        convert(ort_target, "mobilenet_v3_small", width=0.75, resolution=96, out=tmp_path / "new" / "o",
                calib_size=4, float_layers=("no.such.layer",), weights="random")
    assert not (tmp_path / "new").exists()


def test_a_partial_rebuild_leaves_only_what_its_manifest_lists(tmp_path, ort_target):
    out = tmp_path / "o"
    convert(ort_target, "mobilenet_v3_small", width=0.75, resolution=96, out=out, calib_size=4, weights="random")
    (out / "notes.txt").write_text("mine")
    said = []
    m = convert(ort_target, "mobilenet_v3_small", width=0.75, resolution=96, out=out, calib_size=4,
                precision="fp32", progress=said.append, weights="random")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model_fp32.onnx", "notes.txt"]
    assert [a.path for a in Manifest.read(out).artifacts] == ["model_fp32.onnx"] and m.folder == out
    assert any("previous build's model_int8.onnx" in s for s in said)


def test_agreement_is_enforced_only_on_enough_parity_images(tmp_path, ort_target):
    from dataclasses import replace

    from edgekit.models import create

    data = yaml.safe_load(Path(ort_target).read_text())
    data["parity"] = {"int8_min_agreement": 1.0}
    Path(ort_target).write_text(yaml.safe_dump(data))
    model = create("mobilenet_v3_small", width=0.75, resolution=96)
    model.meta = replace(model.meta, weights="trained.pth")  # weights that are not random
    said = []
    m = convert(ort_target, model, out=tmp_path / "o", precision="int8", calib_size=4, progress=said.append)
    assert m.parity_images["agreement_enforced"] is False
    assert any("reported, not enforced: 4 parity images (one image = 25.0 points)" in s for s in said)
    assert any("not enforced" in n for n in m.notices)
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "photos").mkdir()
    for i in range(50):
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(tmp_path / "photos" / f"{i}.png")
    m = convert(ort_target, model, out=tmp_path / "o", precision="int8", calib=tmp_path / "photos",
                check=False)
    assert m.parity_images["agreement_enforced"] is True and not m.notices


def test_unreadable_images_are_skipped_counted_and_named(tmp_path, ort_target):
    from shutil import copy

    from edgekit.calibration import DEFAULT_CALIBRATION_DIR

    calib = tmp_path / "calib" / "cats"
    calib.mkdir(parents=True)
    for name in ("chelsea_cat.jpg", "coffee.jpg", "cameraman_gray.jpg"):
        copy(DEFAULT_CALIBRATION_DIR / name, calib / name)
    (calib / "broken.jpg").write_text("nope")
    _bomb_png(calib / "huge.png")  # 16000x16000: unreadable like any other
    said = []
    m = convert(ort_target, "mobilenet_v3_small", width=0.75, resolution=96, out=tmp_path / "o",
                calib=tmp_path / "calib", precision="int8", progress=said.append, weights="random")
    assert m.calibration["n_images"] == 3 and m.calibration["skipped_unreadable"] == 2
    assert m.calibration["unreadable_files"] == ["cats/broken.jpg", "cats/huge.png"]
    assert any("(2 unreadable skipped: cats/broken.jpg, cats/huge.png)" in s for s in said)


def test_normalisation_overrides_the_recorded_input_range(tmp_path):
    from edgekit.backends.onnx_export import export_onnx
    from edgekit.convert import resolve_source
    from edgekit.models import create
    from edgekit.source import ModelSource

    export_onnx(ModelSource.from_module(create("mobilenet_v3_small", width=0.5, resolution=64)), tmp_path / "m.onnx")
    assert resolve_source(str(tmp_path / "m.onnx"), None, None, None).meta.preprocessing.std[0] == 0.229
    unit = resolve_source(str(tmp_path / "m.onnx"), None, None, None, "unit").meta.preprocessing
    assert (unit.mean, unit.std, unit.size) == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 64)
    tf = resolve_source("mobilenet_v3_small", "random", 0.5, 64, "tensorflow").meta.preprocessing
    assert tf.mean == tf.std == (0.5, 0.5, 0.5)
    out = run("convert", "--model", str(tmp_path / "m.onnx"), "--normalisation", "caffe")
    assert out.returncode == 2 and "'caffe' is not one of 'torchvision', 'tensorflow', 'unit'" in out.stderr


def test_imported_float_model_takes_a_normalisation(tmp_path, shared):
    from edgekit.models.weights import load_checkpoint

    src = shared("models", "vww_96_float.tflite")  # MLPerf Tiny: input is pixel / 255
    out = run("weights", "import", str(src), "--arch", "mobilenet_v1", "--normalisation", "unit",
              "--out", str(tmp_path / "vww.pth"))
    assert out.returncode == 0, out.stderr
    pre = load_checkpoint(tmp_path / "vww.pth").meta.preprocessing
    assert pre.mean == (0.0, 0.0, 0.0) and pre.std == (1.0, 1.0, 1.0) and pre.size == 96


def _bomb_png(path):
    """A PNG claiming 16000x16000 pixels (PIL refuses it as a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 16000, 16000, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 16001)) + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_is_an_unreadable_image(tmp_path):
    from edgekit.preprocessing import load_image

    with pytest.raises(InputError, match=r"cannot read image .*bomb.png: Image size \(256000000 pixels\)"):
        load_image(_bomb_png(tmp_path / "bomb.png"))


def test_duplicate_backend_is_refused_and_the_previous_build_kept(tmp_path, ort_target):
    out = tmp_path / "o"
    convert(ort_target, "mobilenet_v3_small", width=0.75, resolution=96, out=out, calib_size=4, weights="random")
    before = _folder_state(out)
    data = yaml.safe_load(Path(ort_target).read_text())
    data["builds"] = [{"backend": "onnxruntime", "precisions": ["fp32"]},
                      {"backend": "onnxruntime", "precisions": ["int8"]}]
    Path(ort_target).write_text(yaml.safe_dump(data))
    result = run("convert", "--target", ort_target, "--model", "mobilenet_v3_small", "--weights", "random",
                 "--width", "0.75",
                 "--resolution", "96", "--calib-size", "4", "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert "backend 'onnxruntime' is listed twice in builds" in result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert _folder_state(out) == before


def test_a_failed_publish_leaves_the_previous_build(tmp_path, ort_target):
    from edgekit.fileio import publish

    out = tmp_path / "o"
    convert(ort_target, "mobilenet_v3_small", width=0.75, resolution=96, out=out, calib_size=4, precision="fp32", weights="random")
    before = _folder_state(out)
    # a staged file missing (the duplicate-build case): refused before anything is removed
    staging = out / ".edgekit-build-test"
    staging.mkdir()
    (staging / "manifest.json").write_text("{}")
    (staging / "model_fp32.onnx").write_text("new")
    with pytest.raises(InputError, match="the build did not produce model_int8.onnx"):
        publish(staging, out, ["model_fp32.onnx", "model_int8.onnx", "manifest.json"], "manifest.json",
                ["model_fp32.onnx"])
    staging.rename(tmp_path / "staging")
    assert _folder_state(out) == before
    # a folder where a new artifact goes: the whole build fails, the previous one stays whole
    (out / "model_int8.onnx").mkdir()
    with pytest.raises(InputError, match=r"model_int8.onnx is a folder: cannot publish"):
        convert(ort_target, "mobilenet_v3_small", width=0.75, resolution=96, out=out, calib_size=4, weights="random")
    (out / "model_int8.onnx").rmdir()
    assert _folder_state(out) == before


def test_nan_weights_are_refused_before_any_work(tmp_path, ort_target):
    import torch

    from edgekit.models import create
    from edgekit.models.weights import save_checkpoint

    model = create("mobilenet_v3_small", width=0.75, resolution=96)
    with torch.no_grad():
        model.classifier[-1].weight[3, :5] = float("nan")
    save_checkpoint(model, tmp_path / "nan.pth")
    result = run("convert", "--target", ort_target, "--weights", str(tmp_path / "nan.pth"),
                 "--out", str(tmp_path / "o"), "--calib-size", "4")
    assert result.returncode == 2, result.stderr
    assert "nan.pth: 5 weight values are NaN or infinite (in classifier.3.weight); nothing converted" in result.stderr
    assert "calibration:" not in result.stderr and "converting" not in result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kwargs,message", [
    (dict(target="rpi4", backend="tflite", calib_method="entropy"),
     "the tflite backend cannot calibrate with 'entropy' (it supports minmax, mean_minmax, histogram, mse, "
     "percentile)"),
    (dict(target="ORT", float_layers=("bogus",)), "no layer named 'bogus' in the model"),
    (dict(target="rpi4", backend="tensorrt"),
     "unknown backend 'tensorrt' (choose from: edgetpu, executorch, onnxruntime, openvino, tflite)"),
    (dict(target="ORT", weight_rounding="exact"), "unknown weight rounding 'exact'"),
])
def test_options_are_checked_before_any_work(tmp_path, ort_target, kwargs, message):
    said = []
    kwargs = dict(kwargs, target=ort_target if kwargs["target"] == "ORT" else kwargs["target"])
    with pytest.raises(InputError) as info:
        convert(model="mobilenet_v3_small", width=0.75, resolution=96, out=tmp_path / "o", calib_size=4,
                progress=said.append, **kwargs, weights="random")
    assert message in str(info.value)
    assert not [s for s in said if "calibration" in s or "converting" in s or "int8 weights" in s]
    assert not (tmp_path / "o").exists()


def test_a_rebuild_removes_the_previous_builds_bench_chart(tmp_path, ort_target):
    out = tmp_path / "o"
    convert(ort_target, "mobilenet_v3_small", width=0.75, resolution=96, out=out, calib_size=4, weights="random")
    (out / "bench.png").write_bytes(b"chart of model_fp32.onnx and model_int8.onnx")
    with pytest.raises(InputError):  # a failed build publishes nothing: the chart still fits
        convert(ort_target, "mobilenet_v3_small", out=out, weight_rounding="exact", weights="random")
    assert (out / "bench.png").exists()
    said = []
    convert(ort_target, "mobilenet_v3_small", width=0.75, resolution=96, out=out, calib_size=4,
            precision="fp32", progress=said.append, weights="random")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model_fp32.onnx"]
    assert any("bench.png: it charts the previous build" in s for s in said)


def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_staging_folders_of_dead_runs_are_removed(tmp_path, ort_target):
    import socket

    out = tmp_path / "o"
    out.mkdir()
    host = socket.gethostname()
    dead = out / f".edgekit-build-{_dead_pid()}@{host}-abcd1234"
    live = out / f".edgekit-build-{os.getpid()}@{host}-efgh5678"  # a concurrent run's: kept
    other_host = out / f".edgekit-build-{_dead_pid()}@not-{host}-ijkl9012"  # can't tell: kept
    for folder in (dead, live, other_host):
        folder.mkdir()
        (folder / "model_fp32.onnx").write_bytes(b"x" * 1000)
    convert(ort_target, "mobilenet_v3_small", width=0.75, resolution=96, out=out, calib_size=4, precision="fp32", weights="random")
    assert not dead.exists() and live.exists() and other_host.exists()


@pytest.mark.parametrize("backend", ["onnxruntime", "tflite"])
def test_sigterm_mid_convert_leaves_no_staging_and_the_previous_build(tmp_path, backend):
    """tflite: SIGTERM while its converter runs here and int8 converts in the worker process
    (a KeyboardInterrupt raised in there aborted the process, leaving the staging folder)."""
    import signal
    import time

    out = tmp_path / "o"
    small = ["--model", "mobilenet_v3_small", "--weights", "random", "--width", "0.75", "--resolution", "96",
             "--calib-size", "4"]
    first = run("convert", "-b", backend, *small, "--out", str(out))
    assert first.returncode == 0, first.stderr
    before = _folder_state(out)
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr_file:
        process = subprocess.Popen([sys.executable, "-m", "edgekit.cli.main", "convert", "-b", backend, *small,
                                    "--resolution", "160", "--out", str(out)],
                                   stdout=subprocess.DEVNULL, stderr=stderr_file, text=True)
        deadline = time.monotonic() + 300
        while "converting" not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)  # until a conversion is running
        time.sleep(1.0)
        assert process.poll() is None and list(out.glob(".edgekit-build-*")), log.read_text()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    stderr = log.read_text()
    assert process.returncode == 143, stderr
    assert "terminated: the unfinished build was removed" in stderr and "Traceback" not in stderr
    assert not list(out.glob(".edgekit-build-*"))
    assert _folder_state(out) == before
