"""`edgekit check`: per-op placement on every backend, for edgekit's builds and for files it did not
build (Google's published .tflite, hand-made ONNX), and the errors for files that are no model."""
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.check import check
from edgekit.cli.main import cli, main
from edgekit.errors import InputError


def run(*args):
    return CliRunner().invoke(cli, ["check", *map(str, args)])


def fails(capsys, *args) -> str:
    """Run the real entry point (its error handling included); the one line it printed."""
    with pytest.raises(SystemExit) as info:
        main(["check", *map(str, args)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def x86_build(tmp_path_factory):
    """Every x86 artifact (ONNX Runtime, OpenVINO, TFLite, ExecuTorch; fp32/fp16/int8) of a small MobileNetV2."""
    from edgekit.convert import convert

    out = tmp_path_factory.mktemp("check") / "x86"
    convert("x86", "mobilenet_v2", weights="random", width=0.35, resolution=96, out=out)
    return out


def by_file(reports):
    return {(Path(r.path).name, r.backend): r for r in reports}


def test_every_artifact_of_a_build_is_placed(x86_build):
    reports = by_file(check(x86_build))
    assert {(name, b) for name, b in reports} == {
        ("model_fp32.onnx", "onnxruntime"), ("model_int8.onnx", "onnxruntime"),
        ("model_fp32.xml", "openvino"), ("model_fp16.xml", "openvino"), ("model_int8.xml", "openvino"),
        ("model_fp32.tflite", "tflite"), ("model_int8.tflite", "tflite"),
        ("model_fp32.pte", "executorch"), ("model_int8.pte", "executorch")}
    for r in reports.values():
        assert r.total > 20 and r.verdict() and json.dumps(r.to_dict())
    # edgekit's int8 MobileNetV2 is fully on the fast path of each runtime
    ort = reports["model_int8.onnx", "onnxruntime"]
    assert ort.accelerated == ort.total and {op.op for op in ort.ops} >= {"QLinearConv", "QLinearAdd"}
    ov = reports["model_int8.xml", "openvino"]
    assert ov.accelerated == ov.total
    assert all(op.runs_on.split()[0] in ("u8", "i8") for op in ov.ops if op.op == "Convolution")
    tfl = reports["model_int8.tflite", "tflite"]
    assert tfl.accelerated == tfl.total and tfl.partitions == 1
    assert "all" in tfl.verdict() and "XNNPACK" in tfl.verdict()
    pte = reports["model_int8.pte", "executorch"]
    assert pte.accelerated == pte.total and pte.partitions == 1
    # a float model is not "not quantized" op by op: its kernels are the fp32 ones
    assert "float model" in reports["model_fp32.onnx", "onnxruntime"].accelerator


def test_build_cli_table_and_json(x86_build):
    result = run(x86_build, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert len(data) == 9 and all(d["verdict"] and d["operators"] for d in data)  # 3 + 2 + 2 + 2 .pte
    table = run(x86_build)
    assert table.exit_code == 0 and "model_int8.onnx on onnxruntime: all" in table.output


def test_googles_v2_maps_to_the_edge_tpu_and_xnnpack(shared):
    path = shared("models", "mobilenet_v2_1.0_224_quant.tflite")
    reports = {r.backend: r for r in check(path)}
    assert set(reports) == {"tflite", "edgetpu"}
    assert reports["edgetpu"].accelerated == reports["edgetpu"].total == 66
    assert reports["edgetpu"].partitions == 1
    # XNNPACK leaves its uint8 average pool and softmax to LiteRT's kernels
    tfl = reports["tflite"]
    assert [op.op for op in tfl.ops if not op.accelerated] == ["AVERAGE_POOL_2D", "SOFTMAX"]
    assert tfl.partitions == 2 and "64 of 66 ops on XNNPACK in 2 partitions" in tfl.verdict()


def test_googles_uint8_v3_small_leaves_xnnpack_for_hard_swish(shared):
    """XNNPACK has no uint8 HARD_SWISH / AVERAGE_POOL_2D: the graph splits into partitions."""
    path = shared("models", "mobilenet_v3_small_1.0_224.uint8.tflite")
    (tfl,) = check(path, "rpi4")  # rpi4 builds tflite, not edgetpu
    off = {op.op for op in tfl.ops if not op.accelerated}
    assert {"HARD_SWISH", "AVERAGE_POOL_2D"} <= off
    assert all("(uint8" in op.reason for op in tfl.ops if not op.accelerated)
    assert tfl.partitions > 1 and "partitions" in tfl.verdict()
    (tpu,) = check(path, "coral-usb")
    assert tpu.accelerated == tpu.total


@pytest.mark.parametrize("name", ["vww_96_int8.tflite", "vww_96_float.tflite", "tf2_mobilenet_v2_1.0_224_ptq.tflite",
                                  "mobilenet_v1_0.25_128_quant.tflite"])
def test_every_shared_tflite_is_placed(shared, name):
    for r in check(shared("models", name)):
        assert r.total > 0 and r.verdict()
    float_tpu = {r.backend: r for r in check(shared("models", "vww_96_float.tflite"))}["edgetpu"]
    assert float_tpu.accelerated == 0 and "float32" in float_tpu.ops[0].reason


def qdq_onnx(path: Path, middle: str) -> Path:
    """x -> Q -> DQ -> Conv (int8 weights via DQ) -> Q -> DQ -> MIDDLE -> Q -> DQ -> y."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z"),
             numpy_helper.from_array(np.ones((4, 3, 3, 3), np.int8), "w_q"),
             numpy_helper.from_array(np.array(0.01, np.float32), "ws")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w_q", "ws", "z"], ["w"]),
             helper.make_node("Conv", ["xd", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "s", "z"], ["cd"]),
             helper.make_node(middle, ["cd"], ["m"], name="middle"),
             helper.make_node("QuantizeLinear", ["m", "s", "z"], ["mq"]),
             helper.make_node("DequantizeLinear", ["mq", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def test_onnx_runtime_float_fallback_is_named(tmp_path):
    pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")
    (r,) = check(qdq_onnx(tmp_path / "sin.onnx", "Sin"))  # no int8 kernel for Sin
    placed = {op.op: op for op in r.ops}
    assert placed["QLinearConv"].accelerated
    assert not placed["Sin"].accelerated and placed["Sin"].runs_on == "float fallback"
    assert "no fused int8 kernel" in placed["Sin"].reason
    assert r.verdict().startswith("1 of 2 ops on int8 kernels")
    (fused,) = check(qdq_onnx(tmp_path / "relu.onnx", "Sigmoid"))  # QLinearSigmoid exists
    assert fused.accelerated == fused.total


@pytest.mark.parametrize("suffix, content", [(".tflite", b"garbage" * 20), (".onnx", b"garbage" * 20),
                                             (".xml", b"<net>not openvino</net>"), (".tflite", b"")])
def test_a_file_that_is_no_model_gets_one_line(tmp_path, capsys, suffix, content):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    assert "not" in fails(capsys, path)


def test_cli_errors(tmp_path, shared, capsys):
    assert "not found" in fails(capsys, tmp_path / "missing.tflite")
    other = tmp_path / "notes.txt"
    other.write_text("x")
    assert "reads" in fails(capsys, other)
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    assert "holds no manifest.json" in fails(capsys, empty)
    assert "none of them runs .onnx" in fails(capsys, qdq_onnx(tmp_path / "m.onnx", "Sin"), "--target", "coral-usb")
    with pytest.raises(InputError, match="unknown target"):
        check(shared("models", "vww_96_int8.tflite"), "no-such-target")
