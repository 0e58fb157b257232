import pickle

import pytest
import torch

from edgekit.errors import InputError
from edgekit.models import create
from edgekit.models.loading import load_model
from edgekit.models.weights import (TORCHVISION_WEIGHTS, load_checkpoint, read_checkpoint,
                                    resolve_imagenet, save_checkpoint)
from edgekit.preprocessing import Preprocessing


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_checkpoint_round_trip(tmp_path, suffix):
    model = load_model("mobilenet_v3_small", width=0.75, resolution=160, weights="random")
    model.meta = model.meta.with_(labels=tuple(f"class {i}" for i in range(1000)),
                                  preprocessing=Preprocessing.tensorflow(160))
    path = save_checkpoint(model, tmp_path / f"m{suffix}")
    loaded = load_checkpoint(path)
    assert loaded.meta == model.meta
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert not list(tmp_path.glob(".*tmp"))  # nothing half-written left behind


def test_bare_torchvision_state_dict_loads(tmp_path):
    src = create("mobilenet_v2")
    torch.save(src.state_dict(), tmp_path / "tv.pth")
    model = load_model("mobilenet_v2", str(tmp_path / "tv.pth"))
    assert torch.equal(model.state_dict()["classifier.1.weight"], src.state_dict()["classifier.1.weight"])


def test_mismatch_names_keys_and_shapes(tmp_path):
    torch.save(create("mobilenet_v2").state_dict(), tmp_path / "v2.pth")
    with pytest.raises(InputError, match=r"missing .*unexpected|shape mismatch"):
        load_model("mobilenet_v3_small", str(tmp_path / "v2.pth"))
    torch.save(create("mobilenet_v2", width=0.5).state_dict(), tmp_path / "half.pth")
    with pytest.raises(InputError, match=r"shape mismatch features\.0\.0\.weight \(16, 3, 3, 3\)"):
        load_model("mobilenet_v2", str(tmp_path / "half.pth"))


def test_unsafe_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"state_dict": Evil()}))
    with pytest.raises(InputError, match="cannot read weights file"):
        read_checkpoint(path)


@pytest.mark.parametrize("content,name,message", [
    (None, "missing.pth", "not found"),
    (b"garbage", "bad.pth", "cannot read weights file"),
    (b"x", "weights.bin", "unsupported weights file"),
])
def test_bad_weight_files(tmp_path, content, name, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_checkpoint(path)


def test_imagenet_offline_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("EDGEKIT_OFFLINE", "1")
    with pytest.raises(InputError, match=r"place mobilenet_v2-b0353104\.pth .* in .*checkpoints/"):
        resolve_imagenet("mobilenet_v2")
    with pytest.raises(InputError, match="no published ImageNet weights"):
        resolve_imagenet("mobilenet_v1")


def test_imagenet_from_hub_cache(tmp_path, monkeypatch):
    """A model without built-in weights: 'imagenet' is torchvision's checkpoint, from the hub cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("EDGEKIT_OFFLINE", "1")
    src = create("mobilenet_v3_large")
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(src.state_dict(), cache / TORCHVISION_WEIGHTS["mobilenet_v3_large"])
    model = load_model("mobilenet_v3_large", "imagenet")
    assert model.meta.weights == "imagenet"
    assert torch.equal(model.state_dict()["features.0.0.weight"], src.state_dict()["features.0.0.weight"])


def test_random_weights_give_real_activations():
    model = load_model("mobilenet_v2", weights="random")
    with torch.no_grad():
        out = model(torch.randn(2, 3, 224, 224))
    assert out.abs().max() > 1e-2  # not the ~1e-11 of a fresh init: parity checks mean something
    assert model.meta.weights == "random"


@pytest.mark.parametrize("content", [b"this is a text file\n", b"key: value\nother\n", b'{"a": 1}'])
def test_text_file_is_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "notes.pth"
    path.write_bytes(content)
    with pytest.raises(InputError, match="notes.pth: not a PyTorch checkpoint") as info:
        read_checkpoint(path)
    assert "weights_only" not in str(info.value)


def test_refused_pickle_gets_no_unsafe_advice(tmp_path):
    path = tmp_path / "whole_model.pth"
    torch.save(torch.nn.Linear(2, 2), path)  # a pickled module, not a state_dict
    with pytest.raises(InputError, match=r"not a checkpoint of plain tensors .*Linear.*state_dict") as info:
        read_checkpoint(path)
    assert "weights_only" not in str(info.value) and "allowlist" not in str(info.value)


def test_directory_is_not_reported_missing(tmp_path):
    with pytest.raises(InputError, match="is a directory, not a weights file"):
        read_checkpoint(tmp_path)


def test_info_quotes_labels_that_hold_commas(tmp_path):
    """"tench, Tinca tinca" and "goldfish" joined with ", " read as three labels."""
    import subprocess
    import sys

    model = create("mobilenet_v3_small", width=0.75, resolution=96, num_classes=4,
                   labels=["tench, Tinca tinca", "goldfish", "great white shark, white shark", "x"])
    path = save_checkpoint(model.eval(), tmp_path / "m.pth")
    out = subprocess.run([sys.executable, "-m", "edgekit.cli.main", "weights", "info", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())  # the table may fold the cell
    assert '4: "tench, Tinca tinca", "goldfish", "great white shark, white shark", ...' in text

