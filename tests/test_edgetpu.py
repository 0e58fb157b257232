"""Edge TPU: the pre-compile op check, the compiler-absent path and a fake edgetpu_compiler."""
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from edgekit.backends.base import ConvertOptions, backend_for_path, get_backend, list_backends
from edgekit.errors import ConversionError, InputError
from edgekit.models.loading import load_model
from edgekit.parity import compare
from edgekit.source import ModelSource

pytest.importorskip("ai_edge_litert", reason="needs the 'tflite' extra")
pytest.importorskip("litert_torch", reason="needs the 'tflite' extra")

from edgekit.backends import edgetpu_backend  # noqa: E402
from edgekit.backends.edgetpu_backend import COMPILER_MISSING, parse_compiler_log  # noqa: E402
from edgekit.backends.edgetpu_check import check  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
UINT8 = ConvertOptions(layout="NHWC", io_dtype="uint8")

# What edgetpu_compiler -s prints (format of compiler 16), for a model it maps fully.
CANNED_LOG = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 412 ms.

Input model: {model}
Input size: 0.62MiB
Output model: {output}
Output size: 0.71MiB
On-chip memory used for caching model parameters: 0.60MiB
On-chip memory remaining for caching model parameters: 7.13MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 71
Operation log: {log}

Operator                       Count      Status

QUANTIZE                       2          Mapped to Edge TPU
PAD                            5          Mapped to Edge TPU
CONV_2D                        35         Mapped to Edge TPU
DEPTHWISE_CONV_2D              17         Mapped to Edge TPU
ADD                            10         Mapped to Edge TPU
MEAN                           1          Mapped to Edge TPU
FULLY_CONNECTED                1          Mapped to Edge TPU
Compilation child process completed within timeout period.
Compilation succeeded!
"""

PARTIAL_LOG = """Edge TPU Compiler version 16.0.384591198

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 64
Number of operations that will run on CPU: 2

Number of Edge TPU subgraphs: 1
Total number of operations: 66

Operator                       Count      Status

CONV_2D                        36         Mapped to Edge TPU
DEPTHWISE_CONV_2D              17         Mapped to Edge TPU
ADD                            10         Mapped to Edge TPU
AVERAGE_POOL_2D                1          Mapped to Edge TPU
DEQUANTIZE                     1          Operation is working on an unsupported data type
SOFTMAX                        1          More than one subgraph is not supported
"""


# Writes <outdir>/<model stem>_edgetpu.tflite (a copy) and prints the canned summary.
FAKE_COMPILER = """
set -euo pipefail
printf '%s\\n' "$@" > "ARGS_FILE"
out=.
while [ $# -gt 1 ]; do
  case "$1" in
    -o|--out_dir) out="$2"; shift 2 ;;
    *) shift ;;
  esac
done
model="$1"
base=$(basename "$model" .tflite)
output="${base}_edgetpu.tflite"
log="${base}_edgetpu.log"
cp "$model" "$out/$output"
cat <<EOF
CANNED_LOG
EOF
"""


def shared_file(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (../shared/data is only on development machines and CI)")
    return path


def write_fake_compiler(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "edgetpu_compiler"
    script.write_text("#!/usr/bin/env bash\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


@pytest.fixture(scope="module")
def small():
    return ModelSource.from_module(load_model("mobilenet_v2", width=0.35, resolution=96, weights="random"))


@pytest.fixture(scope="module")
def source(small):  # what conftest's calibration fixture builds on
    return small


@pytest.fixture(scope="module")
def uncompiled(small, calibration, tmp_path_factory):
    """edgekit's own int8 MobileNetV2 (uint8 I/O) through the Edge TPU backend, no compiler."""
    out = tmp_path_factory.mktemp("etpu") / "m_int8_edgetpu.tflite"
    with pytest.MonkeyPatch.context() as mp:  # even where the compiler is installed
        mp.setattr(edgetpu_backend.shutil, "which", lambda name, *a, **k: None)
        return get_backend("edgetpu").convert(small, "int8", calibration, out, UINT8)


@pytest.fixture
def reuse_conversion(uncompiled, monkeypatch):
    """Later Edge TPU conversions reuse the module's int8 model instead of converting again."""
    tflite = get_backend("tflite")
    data = uncompiled.path.read_bytes()
    details = {k: uncompiled.details[k] for k in ("converter", "layout", "io_dtype",
                                                  "calibration_method", "calibration_images")}
    monkeypatch.setattr(type(tflite), "convert_bytes", lambda self, *a, **k: (data, dict(details)))


def test_registered_on_top_of_tflite():
    backend = get_backend("edgetpu")
    assert "edgetpu" in list_backends()
    assert backend.base == "tflite" and backend.suffix == ".tflite" and backend.precisions == ("int8",)
    assert backend.filename("model", "int8") == "model_int8_edgetpu.tflite"
    assert backend_for_path(Path("model_int8_edgetpu.tflite")) is get_backend("tflite")


def test_googles_edgetpu_ready_model_is_fully_mapped():
    report = check(shared_file("models", "mobilenet_v2_1.0_224_quant.tflite"))
    assert report.all_mapped and report.first_unsupported is None
    assert report.ops_total == report.ops_mapped == 66
    assert ("SOFTMAX", 1, "Mapped to Edge TPU") in report.table()
    assert "all 66 ops would be mapped" in report.to_text()
    json.dumps(report.to_dict())


def test_googles_v3_small_with_hard_swish_is_fully_mapped():
    report = check(shared_file("models", "mobilenet_v3_small_1.0_224.uint8.tflite"))
    assert report.all_mapped
    assert any(op.op == "HARD_SWISH" and op.mapped for op in report.ops)


def test_float_model_maps_nothing():
    report = check(shared_file("models", "vww_96_float.tflite"))
    assert report.first_unsupported == 0 and report.ops_mapped == 0
    assert "float32" in report.ops[0].reason
    assert "0 of" in report.summary() and "CONV_2D (op 0: float32 tensor)" in report.summary()


def test_edgekit_int8_is_fully_mapped_and_fp32_is_not(uncompiled, small, tmp_path):
    report = uncompiled.details["precheck"]
    assert report["all_mapped"] and report["first_unsupported"] is None
    assert report["ops_total"] == report["ops_mapped"] == 71  # 69 + a QUANTIZE at each end
    fp32 = get_backend("tflite").convert(small, "fp32", None, tmp_path / "f.tflite",
                                         ConvertOptions(layout="NHWC"))
    float_report = check(fp32.path)
    assert float_report.first_unsupported == 0 and float_report.ops_mapped == 0
    assert all(not op.mapped for op in float_report.ops)


def test_float_input_stays_on_the_cpu_and_the_rest_maps(uncompiled, tmp_path):
    """A float input makes the first op (a float -> int8 QUANTIZE) unsupported; it is on the input
    side, so every op after it is still mapped (placement by data flow, as the compiler does)."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = fbu.read_model_from_bytearray(bytearray(uncompiled.path.read_bytes()))
    graph = model.subgraphs[0]
    graph.tensors[graph.inputs[0]].type = fb.TensorType.FLOAT32
    graph.tensors[graph.inputs[0]].quantization = None
    path = tmp_path / "float_front.tflite"
    path.write_bytes(bytes(fbu.convert_object_to_bytearray(model)))
    report = check(path)
    assert report.first_unsupported == 0 and report.ops_mapped == 70 and report.ops_cut == 0
    assert report.ops[0].op == "QUANTIZE" and "float32" in report.ops[0].reason
    assert all(op.mapped for op in report.ops[1:])
    assert "70 of 71 ops would be mapped" in report.summary()


def test_compiler_absent_gives_the_uncompiled_model(uncompiled, small, calibration):
    assert uncompiled.path.name == "m_int8_edgetpu_uncompiled.tflite"
    assert uncompiled.details["compiled"] is False
    assert uncompiled.details["compiler"] == COMPILER_MISSING
    assert "not found: wrote the uncompiled" in uncompiled.details["notice"]
    assert uncompiled.details["precheck"]["path"] == uncompiled.path.name  # not a deleted temp copy
    placement = uncompiled.details["placement"]  # what `edgekit check` says, kept in the manifest
    assert placement["path"] == uncompiled.path.name and placement["backend"] == "edgetpu"
    assert placement["ops_accelerated"] == placement["ops_total"] == 71 and "all 71 ops" in placement["verdict"]
    assert uncompiled.input.dtype == "uint8" and uncompiled.input.layout == "NHWC"
    assert uncompiled.details["fully_integer"] and uncompiled.details["io_dtype"] == "uint8"
    json.dumps(uncompiled.details)
    session = get_backend("edgetpu").load(uncompiled)  # runs on the CPU
    assert session.output.dtype == "uint8"
    p = compare(small.reference(calibration.images), session.run(calibration.images))
    assert p.sqnr_db > 9


def test_float_io_is_rejected(small, calibration, tmp_path):
    with pytest.raises(InputError, match="io_dtype to uint8"):
        get_backend("edgetpu").convert(small, "int8", calibration, tmp_path / "m.tflite",
                                       ConvertOptions(layout="NHWC", io_dtype="float32"))
    with pytest.raises(InputError, match="int8 only"):
        get_backend("edgetpu").convert(small, "fp32", None, tmp_path / "m.tflite", UINT8)


def test_fake_compiler_output_is_parsed(reuse_conversion, small, calibration, tmp_path, monkeypatch):
    args_file = tmp_path / "args.txt"
    script = FAKE_COMPILER.replace("ARGS_FILE", str(args_file)).replace(
        "CANNED_LOG", CANNED_LOG.format(model="$(basename $model)", output="$output", log="$log"))
    fake = write_fake_compiler(tmp_path / "bin", script)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "build" / "m_int8_edgetpu.tflite"
    art = get_backend("edgetpu").convert(small, "int8", calibration, out, UINT8)
    assert art.path == out and out.is_file()
    args = args_file.read_text().split("\n")
    assert args[0] == "-s" and args[1] == "-o" and args[3].endswith("m_int8.tflite")
    assert art.details["compiled"] is True
    report = art.details["compiler"]
    assert report["compiler_version"] == "16.0.384591198"
    assert report["ops_total"] == report["ops_mapped"] == 71 and report["all_mapped"]
    assert report["ops_on_cpu"] == 0 and report["edgetpu_subgraphs"] == 1
    assert {"op": "CONV_2D", "count": 35, "status": "Mapped to Edge TPU"} in report["operators"]
    assert report["memory"]["On-chip memory used for caching model parameters"] == "0.60MiB"
    assert not list(out.parent.glob(".edgetpu-*"))  # the compiler's scratch folder is gone
    # the fake "compiled" file is a plain copy, so it still runs on the CPU
    session = get_backend("edgetpu").load(art)
    assert np.isfinite(session.run(calibration.images[:2])).all()


def test_compiler_failure_keeps_its_stderr(reuse_conversion, small, calibration, tmp_path, monkeypatch):
    fake = write_fake_compiler(tmp_path / "bin", """
echo "Edge TPU Compiler version 16.0.384591198"
echo "ERROR: Internal compiler error. Aborting!" >&2
exit 1
""")
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "m_int8_edgetpu.tflite"
    with pytest.raises(ConversionError, match="Internal compiler error") as exc:
        get_backend("edgetpu").convert(small, "int8", calibration, out, UINT8)
    assert str(exc.value).startswith(f"edgetpu could not convert {small.name} to int8: edgetpu_compiler "
                                     "failed (exit 1)")
    assert exc.value.exit_code == 1 and not out.exists()


def test_partial_mapping_log():
    report = parse_compiler_log(PARTIAL_LOG)
    assert report["ops_total"] == 66 and report["ops_mapped"] == 64 and report["ops_on_cpu"] == 2
    assert not report["all_mapped"]
    assert {"op": "SOFTMAX", "count": 1, "status": "More than one subgraph is not supported"} \
        in report["operators"]
    assert len(report["operators"]) == 6


def test_compiled_model_without_edgetpu_runtime(uncompiled, tmp_path):
    """A file holding edgetpu-custom-op needs libedgetpu; without it the error says so."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = fbu.read_model_from_bytearray(bytearray(uncompiled.path.read_bytes()))
    code = fb.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.CUSTOM
    code.customCode, code.version = "edgetpu-custom-op", 1
    model.operatorCodes.append(code)
    op = model.subgraphs[0].operators[1]
    op.opcodeIndex, op.builtinOptionsType, op.builtinOptions = len(model.operatorCodes) - 1, 0, None
    path = tmp_path / "m_edgetpu.tflite"
    path.write_bytes(bytes(fbu.convert_object_to_bytearray(model)))
    report = check(path)
    assert report.compiled and report.ops_mapped == 1 and "1 Edge TPU custom op" in report.summary()
    if Path("/usr/lib/x86_64-linux-gnu/libedgetpu.so.1").exists():
        pytest.skip("libedgetpu is installed here")
    with pytest.raises(InputError, match="libedgetpu"):
        get_backend("edgetpu").load(path)
