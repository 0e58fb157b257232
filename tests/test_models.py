import json

import pytest
import torch
import torch.nn.functional as F

from conftest import shared_path
from edgekit.errors import InputError
from edgekit.models import STANDARD_VARIANTS, count, create, list_models
from edgekit.models.blocks import HardSwish, TFSameConv2d, make_divisible

PAPER_TABLE = [  # (name, width, resolution, MACs, params (rounded, as printed in the papers))
    ("mobilenet_v1", 1.0, 224, 569e6, 4.2e6),
    ("mobilenet_v1", 0.75, 224, 325e6, 2.6e6),
    ("mobilenet_v1", 0.5, 224, 149e6, 1.3e6),
    ("mobilenet_v1", 0.25, 224, 41e6, 0.5e6),
    ("mobilenet_v1", 1.0, 192, 418e6, 4.2e6),
    ("mobilenet_v1", 1.0, 160, 290e6, 4.2e6),
    ("mobilenet_v1", 1.0, 128, 186e6, 4.2e6),
    ("mobilenet_v2", 1.0, 224, 300e6, 3.5e6),
    ("mobilenet_v2", 1.4, 224, 582e6, 6.11e6),
    ("mobilenet_v3_large", 1.0, 224, 216.6e6, 5.48e6),
    ("mobilenet_v3_small", 1.0, 224, 56.5e6, 2.54e6),
    ("mobilenet_v3_large", 0.75, 224, 140.0e6, 3.38e6),
    ("mobilenet_v3_small", 0.75, 224, 39.1e6, 1.65e6),
]
EXACT_PARAMS = {"mobilenet_v2": 3_504_872, "mobilenet_v3_large": 5_483_032,
                "mobilenet_v3_small": 2_542_856}


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("width,resolution", [(1.0, 224), (0.5, 160), (0.75, 96)])
def test_forward_shape(name, width, resolution):
    model = create(name, width=width, resolution=resolution, num_classes=17).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, resolution, resolution))
    assert out.shape == (2, 17)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list_models())
def test_tf_same_padding_shapes_and_names(name):
    sym = create(name)
    tf = create(name, padding="tf_same")
    assert list(sym.state_dict()) == list(tf.state_dict())
    with torch.no_grad():
        assert tf.eval()(torch.randn(1, 3, 225, 225)).shape == (1, 1000)


@pytest.mark.parametrize("name,count_", EXACT_PARAMS.items())
def test_published_parameter_counts(name, count_):
    assert sum(p.numel() for p in create(name).parameters()) == count_


@pytest.mark.parametrize("name,width,resolution,macs,params", PAPER_TABLE)
def test_paper_table(name, width, resolution, macs, params):
    acc = count(create(name, width=width, resolution=resolution), resolution)
    assert abs(acc.macs - macs) / macs < 0.02, acc.macs
    # Params: within 3%, or equal to the paper's figure at the precision it prints
    # (V1 0.25 has 470,072 parameters; the paper prints 0.5M).
    decimals = len(f"{params / 1e6:g}".partition(".")[2])
    assert (abs(acc.params - params) / params < 0.03
            or round(acc.params / 1e6, decimals) == params / 1e6), acc.params


def test_v1_breakdown_by_layer_type():
    by_type = {t.type: t for t in count(create("mobilenet_v1")).by_type}
    assert 0.94 < by_type["conv1x1"].macs_share < 0.96
    assert 0.73 < by_type["conv1x1"].params_share < 0.76
    assert by_type["linear"].params_share > 0.2
    layer_macs = sum(t.macs for t in by_type.values())
    assert layer_macs == count(create("mobilenet_v1")).macs


def test_accounting_layers_sum_and_shapes():
    acc = count(create("mobilenet_v2"), 224)
    assert sum(layer.macs for layer in acc.layers) == acc.macs
    assert acc.layers[0].output_shape == (32, 112, 112)
    assert acc.layers[-1].type == "linear" and acc.layers[-1].output_shape == (1000,)
    assert count(create("mobilenet_v2"), 112).macs < acc.macs / 3


def test_torchvision_state_dict_compatibility():
    reference = json.loads(shared_path("torchvision-mobilenet-state-dicts.json").read_text())["models"]
    for key, ref in reference.items():
        name, _, suffix = key.rpartition("_")
        try:
            width = float(suffix)
        except ValueError:
            name, width = key, 1.0
        model = create(name, width=width)
        ours = [[k, list(v.shape)] for k, v in model.state_dict().items()]
        assert ours == ref["state_dict"], key
        assert sum(p.numel() for p in model.parameters()) == ref["num_params"], key
        assert count(model).macs == ref["macs_conv_linear"], key
        # a torchvision-layout state_dict loads strictly
        model.load_state_dict({k: torch.zeros(s) for k, s in ref["state_dict"]}, strict=True)


def test_standard_variants_build():
    for v in STANDARD_VARIANTS:
        assert v.name in list_models()


def test_make_divisible():
    assert make_divisible(32 * 0.75) == 24
    assert make_divisible(16 * 0.5) == 8
    assert make_divisible(1280 * 1.4) == 1792
    assert make_divisible(10) == 16  # never more than 10% below the request


def test_tf_same_padding_matches_explicit_asymmetric_pad():
    conv = TFSameConv2d(3, 4, 3, 2, bias=False)
    x = torch.randn(1, 3, 8, 8)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)
    assert torch.allclose(conv(x), expected)
    conv5 = TFSameConv2d(3, 4, 5, 2, bias=False)
    expected5 = F.conv2d(F.pad(x, (1, 2, 1, 2)), conv5.weight, stride=2)
    assert torch.allclose(conv5(x), expected5)


def test_hardswish_equals_torch():
    x = torch.linspace(-8, 8, 1001)
    assert torch.allclose(HardSwish()(x), F.hardswish(x), atol=1e-6)


@pytest.mark.parametrize("kwargs,message", [
    (dict(name="mobilenet_v9"), "did you mean .*'mobilenet_v2'"),
    (dict(name="mobilenet_v2", width=0), "width must be > 0"),
    (dict(name="mobilenet_v2", width=-1), "width must be > 0"),
    (dict(name="mobilenet_v2", resolution=16), "at least 32"),
    (dict(name="mobilenet_v2", padding="valid"), "unknown padding mode"),
    (dict(name="mobilenet_v1", activation="gelu"), "unknown activation"),
])
def test_bad_options(kwargs, message):
    name = kwargs.pop("name")
    with pytest.raises(InputError, match=message):
        create(name, **kwargs)


def test_v1_activation_override():
    model = create("mobilenet_v1", activation="relu6")
    assert any(isinstance(m, torch.nn.ReLU6) for m in model.modules())
    assert not any(isinstance(m, torch.nn.ReLU) for m in model.modules())


@pytest.mark.parametrize("kwargs,message", [
    (dict(width=100), "width must be > 0 and at most 4, got 100"),
    (dict(width=float("nan")), "width must be > 0"),
    (dict(resolution=5000), "resolution must be at least 32 and at most 1024, got 5000"),
    (dict(num_classes=10**9), "num_classes must be >= 1 and at most 100,000"),
])
def test_sizes_are_bounded_before_anything_is_built(kwargs, message):
    """A typo such as --width 100 must fail at once, not build a model that fills the memory."""
    with pytest.raises(InputError, match=message):
        create("mobilenet_v2", **kwargs)
