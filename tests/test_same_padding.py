import pytest
import torch
from torch import nn

from edgekit.backends.same_padding import ChannelsLastPadConv2d, channels_last_padded, same_padded
from edgekit.models import create
from edgekit.models.blocks import TFSameConv2d
from edgekit.models.loading import randomize_statistics


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v1"])
@pytest.mark.parametrize("padding", ["symmetric", "tf_same"])
@pytest.mark.parametrize("resolution", [96, 97])
def test_rewrite_is_exact(name, padding, resolution):
    model = create(name, padding=padding, resolution=resolution, width=0.5)
    randomize_statistics(model)
    model.eval()
    x = torch.randn(2, 3, resolution, resolution)
    rewritten, changed = same_padded(model, x[:1])
    with torch.no_grad():
        assert torch.allclose(model(x), rewritten(x), atol=1e-5)
    if padding == "symmetric":
        assert changed == 0  # PyTorch's own padding is left to the converter and XNNPACK
    else:
        assert changed > 0
        left = [m for m in rewritten.modules() if type(m).__name__ == "TFSameConv2d"]
        assert all(m.kernel_size[0] == 5 and m.stride[0] == 2 for m in left)  # PAD + 5x5 is faster
        grown = [m for m in rewritten.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] == 4]
        assert (len(grown) > 0) == (resolution % 2 == 0)  # stride-2 3x3 layers on even sizes


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
