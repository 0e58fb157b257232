"""The public Python API (edgekit/__init__.py, api.py) and convert's typed plan (convert_plan.py)."""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import edgekit
from edgekit.convert_plan import QuantPlan, plan_build
from edgekit.errors import InputError

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)


def test_import_edgekit_loads_no_torch_nor_runtime():
    done = _python("import sys, edgekit\n"
                   "names = dir(edgekit)\n"
                   "assert 'convert' in names and 'bench' in names, names\n"
                   "heavy = [m for m in ('torch', 'onnxruntime', 'openvino', 'numpy') if m in sys.modules]\n"
                   "print(heavy, edgekit.__version__)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("[] "), done.stdout


def test_api_names_win_over_the_submodules_of_the_same_name():
    """`import edgekit.convert` binds the module on the package: the API function stays."""
    import edgekit.api
    import edgekit.bench.local
    import edgekit.convert
    import edgekit.evaluate
    import edgekit.models
    import edgekit.targets

    assert callable(edgekit.convert) and edgekit.convert.__module__ == "edgekit.convert"
    assert edgekit.evaluate is edgekit.api.evaluate and edgekit.bench is edgekit.api.bench
    # the modules themselves stay importable by name
    assert importlib.import_module("edgekit.convert").convert is edgekit.convert
    from edgekit.models import create  # noqa: F401
    from edgekit.convert import run  # noqa: F401
    assert {t.name for t in edgekit.targets()} >= {"rpi4", "x86"}
    variants = edgekit.models()
    assert ("mobilenet_v2", 1.0, 224, True) in [tuple(v.to_dict().values()) for v in variants]
    with pytest.raises(AttributeError):
        edgekit.no_such_function  # noqa: B018


def test_train_slot_is_the_train_subpackages_function():
    """edgekit.train is the function of edgekit/train/ (a subpackage) once there is one; until
    then it is absent, not an error at import."""
    if importlib.util.find_spec("edgekit.train") is None:
        assert not hasattr(edgekit, "train")
        return
    module = importlib.import_module("edgekit.train")
    assert callable(edgekit.train) and edgekit.train is module.train


@pytest.mark.parametrize("values,message", [
    (dict(weight_rounding="exact"), "unknown weight rounding 'exact' (choose from optimal, nearest)"),
    (dict(calib_size=0), "calibration size must be an integer >= 1, got 0"),
    (dict(max_accuracy_drop=-1.0), "--max-accuracy-drop must be 0 to 100 points, got -1.0"),
    (dict(max_accuracy_drop=float("nan")), "--max-accuracy-drop must be 0 to 100 points, got nan"),
    (dict(max_float_layers=2), "--max-float-layers applies with --max-accuracy-drop"),
    (dict(max_accuracy_drop=1, max_float_layers=0), "--max-float-layers must be an integer >= 1"),
    (dict(calib="no/such/folder"), "image folder not found: no/such/folder"),
])
def test_quant_plan_refuses_bad_values_when_made(values, message):
    with pytest.raises(InputError) as info:
        QuantPlan(**values)
    assert message in str(info.value)


def test_quant_plan_is_frozen_and_normalised(tmp_path):
    plan = QuantPlan(calib=str(tmp_path), float_layers=(" features.1 ", "", "classifier"))
    assert plan.calib == tmp_path and plan.float_layers == ("features.1", "classifier")
    assert QuantPlan(float_layers="features.1, classifier,").float_layers == ("features.1", "classifier")
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.weight_rounding = "nearest"


def test_build_plan_is_checked_against_the_quant_plan_before_the_model_loads(tmp_path, monkeypatch):
    import edgekit.convert_plan as convert_plan

    def never(*_args, **_kwargs):
        raise AssertionError("the model was loaded before the plan was refused")

    with monkeypatch.context() as patched:
        patched.setattr(convert_plan, "resolve_source", never)
        with pytest.raises(InputError, match="the openvino backend cannot calibrate with 'histogram'"):
            plan_build("x86", "mobilenet_v2", quant=QuantPlan(calib_method="histogram"), backend="openvino")
        with pytest.raises(InputError, match="validation size must be an integer >= 1, got 0"):
            plan_build("x86", quant=QuantPlan(), backend="onnxruntime", val_size=0)
    (tmp_path / "afile").write_text("")
    with pytest.raises(InputError, match="afile is a file, not a folder"):
        plan_build("x86", quant=QuantPlan(), backend="onnxruntime", out=tmp_path / "afile")
    plan = plan_build("x86", "mobilenet_v3_small", quant=QuantPlan(float_layers=("features.1",)),
                      weights="random", width=0.75, resolution=96, backend="onnxruntime", precision="int8",
                      out=tmp_path / "o")
    assert [j.label for j in plan.jobs] == ["onnxruntime int8"] and plan.int8_backends == ["onnxruntime"]
    assert plan.source.meta.resolution == 96 and not (tmp_path / "o").exists()  # nothing written yet


@pytest.mark.parametrize("call,message", [
    (lambda: edgekit.bench("x.onnx", iterations=10, duration=1.0), "give --iterations or --duration"),
    (lambda: edgekit.bench(["a.onnx", "b.onnx"], devices="pi@host"), "--device takes one PATH"),
    (lambda: edgekit.bench("a.onnx", key="id_ed25519"), "need --device"),
    (lambda: edgekit.bench("missing.onnx"), "artifact not found: missing.onnx"),
    (lambda: edgekit.evaluate("x.onnx", "data", labels=["a"]), "--labels applies with --normalisation"),
    (lambda: edgekit.load("mobilenet_v9"), "unknown model 'mobilenet_v9'"),
    (lambda: edgekit.quant_report(model="mobilenet_v2", weights="random", target="rpi9"), "unknown target 'rpi9'"),
])
def test_api_refuses_bad_input_with_the_clis_message(call, message):
    with pytest.raises(InputError, match=re.escape(message)):
        call()


def test_load_takes_a_name_or_a_checkpoint(tmp_path):
    from edgekit.models.weights import save_checkpoint

    model = edgekit.load("mobilenet_v3_small", "random", width=0.75, resolution=96)
    assert model.meta.arch == "mobilenet_v3_small" and model.meta.resolution == 96 and not model.training
    save_checkpoint(model, tmp_path / "m.pth")
    again = edgekit.load(tmp_path / "m.pth")
    assert again.meta.width == 0.75 and again.meta.resolution == 96
    with pytest.raises(InputError, match="is a checkpoint already"):
        edgekit.load(tmp_path / "m.pth", "random")


def test_quant_report_on_a_build_refuses_the_model_options(tmp_path):
    """A build's int8 artifact is quantized already: the options that would quantize a model are
    refused, named as the CLI spells them."""
    manifest = edgekit.convert("x86", "mobilenet_v2", weights="random", width=0.35, resolution=96,
                               backend="onnxruntime", calib_size=4, out=tmp_path / "b")
    assert isinstance(manifest, edgekit.Manifest) and manifest.to_dict()["target"] == "x86"
    with pytest.raises(InputError, match=r"--calib-size, --calib-method do not apply to a build folder"):
        edgekit.quant_report(tmp_path / "b", calib_size=8, calib_method="minmax")
    report = edgekit.quant_report(tmp_path / "b", n_images=2)
    assert report.n_images == 2 and report.to_dict()["layers"]


def _readme_script() -> str:
    section = (REPO / "README.md").read_text().split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_python_api_script_runs(tmp_path):
    """The README's script as it stands: convert the built-in V2 for x86 (ONNX Runtime), bench it,
    evaluate it on three bundled photos."""
    pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")
    done = _python(_readme_script(), cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["build/x86/model_fp32.onnx", "build/x86/model_int8.onnx"] * 2
    assert all(" ms" in line for line in lines[:2]) and all("of 3 photos" in line for line in lines[2:])
    assert "top-1 100% of 3 photos" in lines[2]  # the float model names the cat, the espresso, the missile
    assert (tmp_path / "build" / "x86" / "manifest.json").is_file()
