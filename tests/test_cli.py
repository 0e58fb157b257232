import json
import subprocess
import sys

import pytest
import torch

from edgekit.models import create


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit.cli.main", *args],
                          capture_output=True, text=True, timeout=300)


def test_help_and_version():
    assert run("--help").returncode == 0
    assert run("-h").returncode == 0
    out = run("--version")
    assert out.returncode == 0 and "0.1.0" in out.stdout
    for cmd in (["models", "-h"], ["models", "show", "-h"], ["weights", "import", "-h"]):
        assert run(*cmd).returncode == 0, cmd


def test_models_json_keys():
    out = run("models", "--json")
    assert out.returncode == 0
    rows = json.loads(out.stdout)
    assert {tuple(sorted(r)) for r in rows} == {("builtin_weights", "macs", "name", "params", "resolution", "width")}
    v2 = next(r for r in rows if r["name"] == "mobilenet_v2" and r["width"] == 1.0)
    assert v2["params"] == 3_504_872 and v2["macs"] == 300_774_272
    assert v2["builtin_weights"] == "mobilenet_v2_1.0_224"
    assert next(r for r in rows if r["name"] == "mobilenet_v3_large")["builtin_weights"] is None
    assert isinstance(v2["width"], float) and isinstance(v2["macs"], int)


def test_models_show():
    out = run("models", "show", "mobilenet_v1", "--width", "0.5", "--resolution", "160")
    assert out.returncode == 0
    assert "conv1x1" in out.stdout and "total" in out.stdout
    data = json.loads(run("models", "show", "mobilenet_v3_small", "--json").stdout)
    assert data["params"] == 2_542_856 and len(data["layers"]) > 50


@pytest.mark.parametrize("args,message", [
    (["models", "show", "mobilenet_v9"], "or 'mobilenet_v2'"),
    (["models", "show", "mobilenet_v2", "--width", "0"], "must be > 0"),
    (["models", "show", "mobilenet_v2", "--resolution", "31"], "at least 32"),
    (["modles"], "No such command"),
    (["weights", "info", "nope.pth"], "not found"),
])
def test_bad_input_one_line_error(args, message):
    out = run(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_mismatched_weights_file(tmp_path):
    torch.save(create("mobilenet_v2").state_dict(), tmp_path / "v2.pth")
    out = run("weights", "info", str(tmp_path / "v2.pth"))
    assert out.returncode == 0 and "bare state_dict" in out.stdout
    (tmp_path / "broken.pth").write_bytes(b"\x00" * 10)
    out = run("weights", "info", str(tmp_path / "broken.pth"))
    assert out.returncode == 2 and out.stderr.startswith("error: cannot read weights file")
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args,message", [
    (["models", "show", "mobilenet_v2", "--width", "100", "--json"], "must be > 0 and at most 4, got 100"),
    (["models", "show", "mobilenet_v2", "--resolution", "5000"], "at most 1024, got 5000"),
    (["weights", "import", "x.tflite", "--arch", "mobilenet_v2", "--width", "100", "--out", "x.pth"],
     "not in the range 0<x<=4"),
])
def test_width_and_resolution_are_bounded(args, message):
    out = run(*args)  # before the fix: a 24 GB model, OOM-killed
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_models_show_help_mentions_no_checkpoint():
    out = run("models", "show", "-h")
    assert out.returncode == 0 and "checkpoint" not in out.stdout


def test_weights_info_table_by_default_json_with_flag(tmp_path):
    from edgekit.models.weights import save_checkpoint

    save_checkpoint(create("mobilenet_v3_small", width=0.75, resolution=96), tmp_path / "m.pth")
    out = run("weights", "info", str(tmp_path / "m.pth"))
    assert out.returncode == 0 and not out.stdout.lstrip().startswith("{")
    assert "mobilenet_v3_small" in out.stdout and "0.75" in out.stdout
    data = json.loads(run("weights", "info", str(tmp_path / "m.pth"), "--json").stdout)
    assert data["arch"] == "mobilenet_v3_small" and data["width"] == 0.75 and data["tensors"] > 100


def test_weights_info_errors(tmp_path):
    out = run("weights", "info", str(tmp_path))
    assert out.returncode == 2 and "is a directory" in out.stderr
    (tmp_path / "notes.pth").write_text("just some text\n")
    out = run("weights", "info", str(tmp_path / "notes.pth"))
    assert out.returncode == 2 and "not a PyTorch checkpoint" in out.stderr
    assert "weights_only" not in out.stderr


def test_weights_fetch_offers_only_published_checkpoints():
    out = run("weights", "fetch", "-h")
    assert "mobilenet_v2" in out.stdout and "mobilenet_v1" not in out.stdout
    assert run("weights", "fetch", "mobilenet_v1").returncode == 2


def test_bad_target_file_is_one_line_exit_2(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ndescription: d\ncpu: {arch: x86_64, cores: 2}\nthreads: abc\n"
                    "builds: [{backend: onnxruntime, precisions: [fp32]}]\n")
    out = run("targets", "show", str(path))
    assert out.returncode == 2 and out.stderr.startswith("error:")
    assert "threads must be an integer" in out.stderr and len(out.stderr.splitlines()) == 1
    out = run("targets", "show", str(tmp_path / "nonexist.yaml"))
    assert out.returncode == 2 and "target file not found" in out.stderr


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["convert", "--help"], ["bench", "-h"],
                                  ["eval", "-h"], ["quant-report", "-h"], ["weights", "fetch", "-h"]])
def test_help_loads_no_heavy_runtime(args):
    """Help and --version answer without importing torch or a runtime (they took ~1.7 s with)."""
    heavy = ("torch", "onnx", "onnxruntime", "openvino", "nncf", "ai_edge_litert", "litert_torch", "cv2")
    script = ("import sys\nfrom edgekit.cli.main import main\n"
              "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n    code = exc.code\n"
              f"print(code, sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.splitlines()[-1] == "0 []", out.stdout + out.stderr
