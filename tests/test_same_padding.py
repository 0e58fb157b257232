import pytest
import torch
from torch import nn

from edgekit.backends.same_padding import same_padded
from edgekit.models import create
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
