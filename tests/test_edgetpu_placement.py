"""Edge TPU placement rules, each on a small graph built for it (tests/tflite_builder.py)."""
import pytest

from edgekit.errors import InputError

from tflite_builder import Graph  # noqa: E402  (skips without the tflite extra)

from edgekit.backends.edgetpu_check import check  # noqa: E402

HW = [1, 8, 8, 4]


def placed(report):
    return [(op.op, op.mapped) for op in report.ops]


def test_unsupported_ops_on_the_input_side_leave_the_rest_mapped(tmp_path):
    g = Graph()
    x = g.input(HW, "float32")
    q = g.unary("QUANTIZE", x)  # float -> int8: the Edge TPU cannot take the float input
    y = g.unary("RELU", q)
    z = g.unary("RELU6", y)
    report = check(g.save(tmp_path / "m.tflite", [z]))
    assert placed(report) == [("QUANTIZE", False), ("RELU", True), ("RELU6", True)]
    assert "float32" in report.ops[0].reason
    assert report.ops_cut == 0 and report.segments == 1
    assert "2 of 3 ops would be mapped" in report.summary()


def test_placement_follows_data_flow_not_execution_order(tmp_path):
    """An unsupported op fed by the Edge TPU cuts only what depends on it: a branch that does not
    depend on it stays mapped although it comes later in execution order."""
    g = Graph()
    x = g.input(HW)
    a = g.unary("RELU", x)
    cpu = g.unary("EXP", a)  # not an Edge TPU op
    after = g.unary("RELU6", cpu)  # supported, but fed by a CPU op after the TPU
    side = g.unary("TANH", a)  # later in order, independent of the CPU op
    report = check(g.save(tmp_path / "m.tflite", [after, side]))
    assert placed(report) == [("RELU", True), ("EXP", False), ("RELU6", False), ("TANH", True)]
    assert report.ops[2].supported and "fed by an op that runs on the CPU" in report.ops[2].status
    assert report.ops_cut == 1 and report.ops_mapped == 2
    assert "1 supported op also run on the CPU" in report.summary()


def test_tile_of_8_bit_tensors_is_mapped(tmp_path):
    g = Graph()
    x = g.input([1, 4, 4, 2])
    multiples = g.tensor([4], "int32", data=[1, 2, 2, 1])
    out = g.tensor([1, 8, 8, 2])
    g.op("TILE", [x, multiples], [out])
    f = g.input([1, 4, 4, 2], "float32")
    fout = g.tensor([1, 8, 8, 2], "float32")
    g.op("TILE", [f, multiples], [fout])
    report = check(g.save(tmp_path / "m.tflite", [out, fout]))
    assert placed(report) == [("TILE", True), ("TILE", False)]


@pytest.mark.parametrize("src, dst, mapped", [
    ((16, 16), (16, 16), True),  # same size
    ((8, 8), (16, 16), True),  # 2x upscale
    ((16, 16), (8, 8), True),  # downscale
    ((1, 1), (33, 33), False),  # DeepLab's image-pooling branch
    ((33, 33), (513, 513), False),  # DeepLab's final upscale
])
@pytest.mark.parametrize("kind", ["RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"])
def test_resize_limits(tmp_path, kind, src, dst, mapped):
    g = Graph()
    x = g.input([1, *src, 8])
    size = g.tensor([2], "int32", data=list(dst))
    out = g.tensor([1, *dst, 8])
    g.op(kind, [x, size], [out])
    report = check(g.save(tmp_path / "m.tflite", [out]))
    op = report.ops[0]
    assert op.mapped is mapped
    if not mapped:
        assert "upscales" in op.reason
    # only a same-size resize is certain: the compiler's real limit is undocumented
    assert op.certain is (src == dst)
    assert report.certain is (src == dst)


def lstm(g: Graph, state_dtype: str, input_dtype: str = "int8") -> int:
    """UNIDIRECTIONAL_SEQUENCE_LSTM as the TFLite converter writes it in full integer: int8 data,
    int8 weights, int32 biases, an int16 cell state (a variable tensor)."""
    x = g.input([1, 5, 4], input_dtype)
    weights = [g.tensor([3, 4], "int8", data=[[1] * 4] * 3) for _ in range(4)]
    recurrent = [g.tensor([3, 3], "int8", data=[[1] * 3] * 3) for _ in range(4)]
    biases = [g.tensor([3], "int32", data=[0, 0, 0]) for _ in range(4)]
    out_state = g.tensor([1, 3], "int8")
    cell = g.tensor([1, 3], state_dtype)
    out = g.tensor([1, 5, 3], "int8")
    # inputs: x, 4 input weights, 4 recurrent weights, 3 peepholes (absent), 4 biases,
    # projection weights and bias (absent), output state, cell state
    g.op("UNIDIRECTIONAL_SEQUENCE_LSTM",
         [x, *weights, *recurrent, -1, -1, -1, *biases, -1, -1, out_state, cell], [out])
    return out


def test_int16_cell_state_does_not_block_an_lstm(tmp_path):
    g = Graph()
    out = lstm(g, "int16")
    report = check(g.save(tmp_path / "m.tflite", [out]))
    assert placed(report) == [("UNIDIRECTIONAL_SEQUENCE_LSTM", True)]


def test_int16_data_input_still_blocks_an_lstm(tmp_path):
    g = Graph()
    out = lstm(g, "int16", input_dtype="int16")
    report = check(g.save(tmp_path / "m.tflite", [out]))
    assert placed(report) == [("UNIDIRECTIONAL_SEQUENCE_LSTM", False)]
    assert "int16" in report.ops[0].reason


def test_large_transpose_is_a_rule_of_thumb(tmp_path):
    g = Graph()
    perm = g.tensor([4], "int32", data=[0, 2, 1, 3])
    small_in = g.input([1, 8, 8, 4])
    small = g.tensor([1, 8, 8, 4])
    g.op("TRANSPOSE", [small_in, perm], [small])
    big_in = g.input([1, 256, 256, 16])
    big = g.tensor([1, 256, 256, 16])
    g.op("TRANSPOSE", [big_in, perm], [big])
    report = check(g.save(tmp_path / "m.tflite", [small, big]))
    assert [op.mapped for op in report.ops] == [True, True]
    assert [op.certain for op in report.ops] == [True, False]
    assert "unspecified limitation" in report.ops[1].caveat
    assert "rule of thumb (TRANSPOSE)" in report.summary()
    assert report.to_dict()["certain"] is False


@pytest.mark.parametrize("content", [b"", b"not a flatbuffer at all" * 10, b"\x00" * 64])
def test_a_file_that_is_not_a_model_says_so(tmp_path, content):
    path = tmp_path / "bad.tflite"
    path.write_bytes(content)
    with pytest.raises(InputError, match="not a valid TFLite model") as info:
        check(path)
    assert "\n" not in str(info.value)
