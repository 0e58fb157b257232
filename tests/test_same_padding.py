import warnings

import numpy as np
import pytest
import torch
from torch import nn

from edgekit.backends.layer_names import module_path
from edgekit.backends.same_padding import ChannelsLastPadConv2d, channels_last_padded, onnx_padded
from edgekit.models import create
from edgekit.models.blocks import TFSameConv2d
from edgekit.models.loading import randomize_statistics


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v1"])
@pytest.mark.parametrize("padding", ["symmetric", "tf_same"])
@pytest.mark.parametrize("resolution", [96, 97])
def test_onnx_export_pads_inside_the_convolutions(name, padding, resolution, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")
    import onnx

    torch.manual_seed(0)
    model = create(name, padding=padding, resolution=resolution, width=0.5)
    randomize_statistics(model)
    model.eval()
    x = torch.randn(1, 3, resolution, resolution)
    padded, changed = onnx_padded(model)
    assert changed == sum(isinstance(m, TFSameConv2d) for m in model.modules())
    assert (changed > 0) == (padding == "tf_same")
    with torch.no_grad():
        assert torch.equal(model(x), padded(x))  # the same module outside an export
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(padded, (x,), str(tmp_path / "m.onnx"), input_names=["input"], opset_version=17,
                          dynamo=False)
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    assert "Pad" not in {n.op_type for n in graph.node}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    asymmetric = [n for n in convs if any(a.name == "pads" and list(a.ints[:2]) != list(a.ints[2:])
                                          for a in n.attribute)]
    # TF-SAME pads one more after than before exactly for stride-2 layers on even sizes
    assert (len(asymmetric) > 0) == (padding == "tf_same" and resolution % 2 == 0)
    # module paths are kept: quant-report and --float-layers name layers by them
    names = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert {module_path(n.name) for n in convs} == names
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        reference = model(x).numpy()
    # float32 sums in another order: convert's fp32 tolerance (1e-4 per 10 of logit range)
    assert np.abs(session.run(None, {"input": x.numpy()})[0] - reference).max() < 1e-4 * max(
        1.0, np.abs(reference).max() / 10) * 2


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small"])
@pytest.mark.parametrize("resolution", [96, 97])
def test_channels_last_padding_is_exact(name, resolution):
    model = create(name, padding="tf_same", resolution=resolution, width=0.5)
    randomize_statistics(model)
    model.eval()
    x = torch.randn(2, 3, resolution, resolution)
    padded, changed = channels_last_padded(model)
    with torch.no_grad():
        assert torch.allclose(model(x), padded(x), atol=1e-4)  # channels-last conv kernels round differently
    same = [m for m in model.modules() if isinstance(m, TFSameConv2d)]
    assert changed == len(same) > 0
    assert [type(m) for m in padded.modules() if isinstance(m, TFSameConv2d)] == [ChannelsLastPadConv2d] * changed
    # module paths are kept: quant-report and --float-layers name layers by them
    assert [n for n, _ in padded.named_modules()] == [n for n, _ in model.named_modules()]
