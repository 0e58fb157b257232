"""Your own PyTorch classifier: `--model net.py:build` (+ a state_dict) and the Python API."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from edgekit.convert import convert
from edgekit.convert_worker import ConvertWorker
from edgekit.source import ModelSource
from edgekit.user_model import load_module_spec

pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")

NET = textwrap.dedent('''
    import torch
    from torch import nn

    class Residual(nn.Module):  # BatchNorm as an attribute, not in a Sequential
        def __init__(self, c):
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(c)

        def forward(self, x):
            return torch.relu(x + self.bn(self.conv(x)))

    class TinyNet(nn.Module):
        def __init__(self, classes=5):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU6())
            self.block = Residual(16)
            self.head = nn.Linear(16, classes)

        def forward(self, x):
            return self.head(self.block(self.stem(x)).mean((2, 3)))

    def build():
        return TinyNet()
''')


class Classifier(nn.Module):
    """An importable class: the Python API may send it to the convert worker."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU())
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def _trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """BatchNorm statistics of a trained model rather than the identity of a fresh one."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 1.5 + 0.5)
    return model.eval()


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit.cli.main", *args], capture_output=True,
                          text=True, timeout=600, cwd=cwd)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    folder = tmp_path_factory.mktemp("own")
    (folder / "net.py").write_text(NET)
    state = _trained_like(load_module_spec(f"{folder / 'net.py'}:build")).state_dict()
    torch.save(state, folder / "net.pt")
    (folder / "labels.txt").write_text("\n".join(f"class {i}" for i in range(5)) + "\n")
    return folder


def test_convert_own_module_from_a_file(net):
    out = net / "build"
    done = run("convert", "-t", "rpi4", "-m", "net.py:build", "-w", "net.pt", "--labels", "labels.txt",
               "--resolution", "64", "-o", str(out), cwd=net)
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    model = manifest["model"]
    assert (model["name"], model["resolution"], model["num_classes"]) == ("TinyNet", 64, 5)
    assert model["labels"] == [f"class {i}" for i in range(5)]
    assert model["preprocessing"]["size"] == 64
    arts = {(a["backend"], a["precision"]): a for a in manifest["artifacts"]}
    assert set(arts) == {("tflite", "fp32"), ("tflite", "int8"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"),
                         ("executorch", "fp32"), ("executorch", "int8")}
    for (_, precision), art in arts.items():
        parity = art["parity"]
        assert not art["parity_failures"], art
        if precision == "fp32":
            assert parity["max_abs_diff"] < 1e-4
        else:
            assert parity["sqnr_db"] > 25  # a 3-layer net loses little to int8
    # the loaded weights are what was converted: a fresh TinyNet's logits differ from the artifact's
    from edgekit.backends.base import get_backend
    from edgekit.calibration import load_calibration
    from edgekit.preprocessing import Preprocessing

    images = load_calibration(None, Preprocessing.from_dict(model["preprocessing"]), 4).images
    fp32 = get_backend("onnxruntime").load(out / arts[("onnxruntime", "fp32")]["path"]).run(images)
    trained = load_module_spec(f"{net / 'net.py'}:build")
    trained.load_state_dict(torch.load(net / "net.pt", weights_only=True))
    with torch.no_grad():
        assert np.abs(trained(torch.from_numpy(images)).numpy() - fp32).max() < 1e-4


@pytest.mark.parametrize("args,message", [
    (["-m", "net.py"], "name the function that returns the model"),
    (["-m", "net.py:nope"], "has no function 'nope'"),
    (["-m", "missing.py:build"], "model file not found"),
    (["-m", "net.py:build", "--width", "0.5"], "--width applies to edgekit's MobileNets"),
    (["-m", "net.py:build", "-w", "labels.txt"], "unsupported weights file"),
    (["-m", "net.py:build", "-w", "wrong.pt"], "weights wrong.pt do not fit TinyNet: missing stem.0.bias"),
    (["-m", "net.py:build", "--labels", "two.txt"], "2 labels for a model with 5 outputs"),
    (["-m", "bad.py:identity"], "expects (1, classes) logits"),
    (["-m", "bad.py:boom"], "bad.py:boom() failed: RuntimeError: out of memory"),
    (["-m", "bad.py:not_a_module"], "returned int, not a torch.nn.Module"),
    (["-m", "broken.py:build"], "importing broken.py failed: NameError"),
])
def test_bad_own_model_one_line_error(net, args, message):
    torch.save({"stem.0.weight": torch.zeros(3)}, net / "wrong.pt")
    (net / "two.txt").write_text("a\nb\n")
    (net / "bad.py").write_text(textwrap.dedent('''
        import torch
        class Identity(torch.nn.Module):
            def forward(self, x):
                return x
        def identity():
            return Identity()
        def boom():
            raise RuntimeError("out of memory\\nmore detail")
        def not_a_module():
            return 3
    '''))
    (net / "broken.py").write_text("undefined_name\n")
    out = net / "refused"
    done = run("convert", *args, "-b", "onnxruntime", "-o", str(out), cwd=net)
    assert done.returncode == 2, done.stderr[-1500:]
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()


def test_python_api_takes_any_classifier(tmp_path):
    """A module without edgekit's .meta: described by one forward pass, converted (TFLite int8 in
    the worker process, which rebuilds the module from its importable class) and verified."""
    model = _trained_like(Classifier())
    source = ModelSource.from_module(model, resolution=48, labels=["a", "b", "c", "d"])
    assert (source.meta.num_classes, source.meta.resolution, source.meta.labels) == (4, 48, ("a", "b", "c", "d"))
    assert ConvertWorker().takes("tflite", source) == ConvertWorker().enabled
    manifest = convert("rpi4", model, resolution=48, out=tmp_path / "api", precision="int8", backend="tflite")
    art = manifest.artifacts[0]
    assert art.parity_failures == [] and art.parity["sqnr_db"] > 25
    assert manifest.model["name"] == "Classifier"


def test_a_model_file_stays_in_this_process(net):
    """Classes of a file imported by path exist only here: never sent to the worker."""
    source = ModelSource.from_module(load_module_spec(f"{net / 'net.py'}:build"), resolution=32)
    assert not ConvertWorker().takes("tflite", source)


def test_batchnorm_outside_a_sequential_is_folded(net):
    """ResNet-style ``self.bn(self.conv(x))``: folded on the fx graph, so int8 weights are rounded
    where the backends quantize them; same function, same module paths."""
    from edgekit.quant.weights import round_weights
    from edgekit.models.fold import fold_batchnorm

    model = _trained_like(load_module_spec(f"{net / 'net.py'}:build"))
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert "block.conv" in dict(folded.named_modules())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-5)
    rounded = round_weights(model, np.random.default_rng(0).standard_normal((4, 3, 32, 32), dtype=np.float32))
    conv = dict(rounded.model.named_modules())["block.conv"]
    w = conv.weight.detach().flatten(1)
    steps = w / (w.abs().amax(1, keepdim=True) / 127)  # every weight on its channel's int8 grid
    assert torch.allclose(steps, steps.round(), atol=1e-3)
