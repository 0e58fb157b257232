"""`edgekit convert`'s worker process: TFLite int8 converts there, beside the other builds."""
import multiprocessing
import pickle

import pytest
import yaml

from edgekit.backends.base import get_backend
from edgekit.convert import convert
from edgekit.errors import MissingDependencyError
from edgekit.models.loading import load_model
from edgekit.parity import compare

pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")
pytest.importorskip("ai_edge_litert", reason="needs the 'tflite' extra")
pytest.importorskip("litert_torch", reason="needs the 'tflite' extra")

WORKER = "converting in a worker process"


@pytest.fixture
def target(tmp_path):
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump({
        "name": "mixed", "description": "TFLite int8 and ONNX Runtime fp32", "cpu": {"arch": "x86_64", "cores": 2},
        "threads": 2, "builds": [
            {"backend": "tflite", "precisions": ["int8"], "layout": "NHWC", "io_dtype": "int8", "why": "test"},
            {"backend": "onnxruntime", "precisions": ["fp32"], "why": "test"}]}))
    return str(path)


def small():
    return load_model("mobilenet_v2", width=0.35, resolution=96, weights="random")


def build(target, out, **kwargs):
    said = []
    manifest = convert(target, small(), out=out, calib_size=8, progress=said.append, **kwargs)
    return manifest, said


def outputs(folder, images):
    backend = get_backend("tflite")
    return backend.load(folder / "model_int8.tflite").run(images)


def test_worker_builds_what_the_serial_build_builds(tmp_path, target):
    parallel, said = build(target, tmp_path / "parallel")
    serial, said_serial = build(target, tmp_path / "serial", parallel=False)
    assert any(m.startswith("tflite int8: " + WORKER) for m in said)
    assert not any(WORKER in m for m in said + said_serial if m.startswith("onnxruntime"))
    assert not any(WORKER in m for m in said_serial)
    assert [(a.backend, a.precision) for a in parallel.artifacts] == [("tflite", "int8"), ("onnxruntime", "fp32")]
    for a, b in zip(parallel.artifacts, serial.artifacts):
        assert a.parity_ok and b.parity_ok and a.parity["n_images"] == 8
        assert a.details.get("ops") == b.details.get("ops")
    # the worker calibrates on one thread: scales may differ in the last bit, outputs barely move
    from edgekit.calibration import load_calibration
    images = load_calibration(None, small().meta.preprocessing, 8).images
    a, b = outputs(tmp_path / "parallel", images), outputs(tmp_path / "serial", images)
    assert compare(b, a).sqnr_db > 25  # random weights: top-1 itself is too close to call
    assert abs(parallel.artifacts[0].parity["sqnr_db"] - serial.artifacts[0].parity["sqnr_db"]) < 0.5
    assert not multiprocessing.active_children()


def test_a_model_that_does_not_pickle_converts_in_process(tmp_path, target):
    model = small()
    model.unpicklable = lambda x: x  # e.g. a module built in a notebook
    said = []
    manifest = convert(target, model, out=tmp_path / "o", calib_size=4, progress=said.append)
    assert not any(WORKER in m for m in said)
    assert "tflite int8: converting -> model_int8.tflite" in said
    assert all(a.parity_ok for a in manifest.artifacts)


def test_a_failing_build_stops_the_worker_and_leaves_no_artifact(tmp_path, target):
    out = tmp_path / "o"

    def progress(message):
        if message.startswith("onnxruntime fp32: converting"):  # the worker is converting now
            raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        convert(target, small(), out=out, calib_size=4, progress=progress)
    assert not multiprocessing.active_children()
    assert not out.exists()  # no artifact, no temporary file, no manifest: the folder it made is gone


def test_backend_errors_cross_the_process_boundary_whole():
    error = pickle.loads(pickle.dumps(MissingDependencyError("litert-torch", "tflite")))
    assert isinstance(error, MissingDependencyError) and error.extra == "tflite"
    assert "pip install 'edgekit[tflite]'" in str(error)


def test_a_script_without_a_main_guard_runs_once(tmp_path):
    """`python convert_my_model.py` with no `if __name__ == "__main__":`: spawning the worker must
    not run the script again there (it would convert twice and break the worker)."""
    import subprocess
    import sys

    script = tmp_path / "convert_my_model.py"
    script.write_text(
        "from edgekit.convert import convert\n"
        "from edgekit.models.loading import load_model\n"
        f"open({str(tmp_path / 'runs.txt')!r}, 'a').write('ran\\n')\n"
        "model = load_model('mobilenet_v2', width=0.35, resolution=96, weights='random')\n"
        f"convert('rpi4', model, out={str(tmp_path / 'out')!r}, precision='int8', backend='tflite',\n"
        "        calib_size=8, progress=print)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert WORKER in done.stdout  # converted in the worker, not after it broke
    assert (tmp_path / "runs.txt").read_text() == "ran\n"
    assert (tmp_path / "out" / "model_int8.tflite").is_file()
