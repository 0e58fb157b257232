"""The backend registry: every fact about a backend is on its entry, and the code that restates
one (the standalone runner) agrees with it."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekit.backends.base import (artifact_suffixes, backend_for_path, backend_named_by, backends,
                                   get_backend, list_backends, list_calibration_methods)
from edgekit.bench import runner
from edgekit.errors import InputError

REPO = Path(__file__).resolve().parent.parent


def test_every_backend_states_its_facts():
    assert list_backends() == ["edgetpu", "executorch", "onnxruntime", "openvino", "tflite"]
    for b in backends():
        assert b.suffix.startswith(".") and b.extra and b.modules and b.precisions, b.name
        if "int8" in b.precisions:
            assert b.default_calibration_method in b.calibration_methods, b.name
    colors = [b.color for b in backends()]
    assert len(set(colors)) == len(colors)  # the chart tells them apart


def test_calibration_method_choices_are_the_union_of_the_backends():
    methods = list_calibration_methods()
    assert set(methods) == {m for b in backends() for m in b.calibration_methods}
    assert len(methods) == len(set(methods))
    assert "histogram" in methods and "entropy" in methods  # TFLite's and ONNX Runtime's own


def test_the_standalone_runner_agrees_with_the_registry():
    """runner.py runs on devices without edgekit: its own table must name the same files and the
    runtime module each backend needs first."""
    assert set(runner.RUNTIMES) == set(artifact_suffixes()) == set(runner.FORMATS)
    for suffix, choices in runner.RUNTIMES.items():
        backend = backend_for_path(Path(f"model{suffix}"))
        assert choices[0][0] in backend.modules, (suffix, choices, backend.modules)


def test_a_file_names_its_backend():
    assert backend_named_by(Path("b/model_int8_edgetpu.tflite")).name == "edgetpu"
    assert backend_named_by(Path("model_int8_edgetpu_uncompiled.tflite")).name == "edgetpu"
    assert backend_named_by(Path("model_int8.tflite")).name == "tflite"
    assert backend_named_by(Path("m.xml")).name == "openvino"
    assert backend_for_path(Path("model_int8_edgetpu.tflite")).name == "tflite"  # what runs it
    assert get_backend("openvino").sidecars == (".bin",)
    with pytest.raises(InputError, match=r"don't know how to run m\.pb: expected one of \.pte, \.onnx, \.xml, \.tflite"):
        backend_named_by(Path("m.pb"))


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=REPO)


def test_reading_the_registry_does_not_load_torch():
    out = _python("import sys\n"
                  "from edgekit.backends.base import backends, list_calibration_methods\n"
                  "backends(), list_calibration_methods()\n"
                  "from edgekit.cli import main\n"
                  "try:\n    main.main(['targets'])\nexcept SystemExit as exc:\n    assert exc.code == 0\n"
                  "print(sorted(m for m in ('torch', 'onnxruntime', 'openvino', 'ai_edge_litert') "
                  "if m in sys.modules))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_an_unsupported_calibration_method_is_refused_before_any_build(tmp_path):
    """rpi4 builds tflite and onnxruntime int8: tflite has no entropy calibration, so nothing runs."""
    out_dir = tmp_path / "out"
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "edgekit", "convert", "-t", "rpi4", "--weights", "random",
                          "--width", "0.35", "--resolution", "96", "--calib-method", "entropy",
                          "-o", str(out_dir)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: the tflite backend cannot calibrate with 'entropy'")
    assert "Traceback" not in out.stderr and not out_dir.exists()
    assert time.monotonic() - started < 60  # refused up front, not after the ONNX Runtime build
