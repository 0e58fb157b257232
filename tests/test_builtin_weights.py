"""The ImageNet weights shipped in edgekit/data/weights: offline, verified, lossless, and used
when no --weights is given."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.errors import InputError
from edgekit.manifest import sha256_of
from edgekit.models import builtin
from edgekit.models.loading import load_model
from edgekit.preprocessing import load_image

from conftest import shared_path

PHOTOS = Path(__file__).resolve().parents[1] / "edgekit" / "data" / "calibration"
# (arch, width, resolution, source file in ../shared/data/models)
BUILTIN = [
    ("mobilenet_v1", 0.25, 128, "mobilenet_v1_0.25_128_quant.tflite"),
    ("mobilenet_v1", 0.5, 160, "mobilenet_v1_0.5_160_quant.tflite"),
    ("mobilenet_v1", 0.75, 192, "mobilenet_v1_0.75_192_quant.tflite"),
    ("mobilenet_v2", 1.0, 224, "mobilenet_v2_1.0_224_quant.tflite"),
    ("mobilenet_v3_small", 1.0, 224, "mobilenet_v3_small_1.0_224.uint8.tflite"),
]
CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


def _top(model, names: list[str], k: int = 5) -> dict[str, list[str]]:
    pre = model.meta.preprocessing
    x = torch.from_numpy(np.stack([pre.apply(load_image(PHOTOS / n)) for n in names]))
    with torch.no_grad():
        top = model(x).topk(k).indices
    return {n: [model.meta.labels[i].split(",")[0] for i in row] for n, row in zip(names, top.tolist())}


def test_index_lists_every_builtin_file():
    entries = {(b.arch, b.width, b.resolution) for b in builtin.index()}
    assert entries == {(a, w, r) for a, w, r, _ in BUILTIN}
    for b in builtin.index():
        assert sha256_of([builtin.weights_dir() / b.file]) == b.sha256
    assert (builtin.weights_dir() / "README.md").read_text().count("Apache License") >= 1


@pytest.mark.parametrize("arch,width,resolution,_src", BUILTIN)
def test_builtin_weights_load_offline_and_name_real_objects(arch, width, resolution, _src, monkeypatch):
    monkeypatch.setenv("EDGEKIT_OFFLINE", "1")
    model = load_model(arch, width=None if width == 1.0 else width)
    m = model.meta
    assert (m.arch, m.width, m.resolution, m.num_classes, m.padding) == (arch, width, resolution, 1001, "tf_same")
    assert m.labels[0] == "background" and len(m.labels) == 1001
    assert m.preprocessing.mean == (0.5,) * 3 and m.preprocessing.std == (0.5,) * 3  # x / 127.5 - 1
    assert m.weights == f"builtin:{arch}_{width:g}_{resolution}".replace("_1_", "_1.0_")
    top = _top(model, ["chelsea_cat.jpg", "coffee.jpg", "cameraman_gray.jpg", "rocket.jpg"])
    assert top["chelsea_cat.jpg"][0] in CATS, top
    assert {"espresso", "cup"} & set(top["coffee.jpg"]), top
    assert "tripod" in top["cameraman_gray.jpg"][:2], top
    assert {"missile", "projectile", "space shuttle"} & set(top["rocket.jpg"]), top


def test_default_is_builtin_v2_and_imagenet_prefers_builtin(monkeypatch):
    monkeypatch.setenv("EDGEKIT_OFFLINE", "1")  # torchvision's download would fail loudly
    assert load_model().meta.weights == "builtin:mobilenet_v2_1.0_224"
    assert load_model("mobilenet_v3_small", "imagenet").meta.weights == "builtin:mobilenet_v3_small_1.0_224"
    at160 = load_model("mobilenet_v2", resolution=160).meta
    assert at160.resolution == 160 and at160.preprocessing.size == 160
    assert load_model("mobilenet_v2", "random", width=0.35, resolution=96).meta.weights == "random"


@pytest.mark.parametrize("arch,width,expected", [
    ("mobilenet_v3_large", None, "no built-in weights for mobilenet_v3_large; pass --weights FILE|imagenet|random"),
    ("mobilenet_v2", 0.5, "no built-in weights for mobilenet_v2 at width 0.5 (built in: --width 1); "
                          "pass --weights FILE|random"),
    ("mobilenet_v1", None, "no built-in weights for mobilenet_v1 at width 1 (built in: --width 0.25, "
                           "--width 0.5, --width 0.75)"),
])
def test_no_builtin_weights_is_an_error_not_silent_random(arch, width, expected):
    with pytest.raises(InputError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("|", r"\|")):
        load_model(arch, width=width)


def test_convert_without_weights_for_a_model_without_builtin_says_what_to_pass(tmp_path):
    out = subprocess.run([sys.executable, "-m", "edgekit.cli.main", "convert", "--model", "mobilenet_v2",
                          "--width", "0.5", "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert "no built-in weights for mobilenet_v2 at width 0.5" in out.stderr
    assert "--weights FILE|random" in out.stderr
    assert not (tmp_path / "o").exists()


@pytest.fixture
def copied_weights(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    shutil.copytree(builtin.weights_dir(), folder)
    monkeypatch.setattr(builtin, "weights_dir", lambda: folder)
    builtin.index.cache_clear()
    yield folder
    builtin.index.cache_clear()


def test_damaged_builtin_file_is_a_clear_error(copied_weights):
    path = copied_weights / "mobilenet_v3_small_1.0_224.safetensors"
    data = bytearray(path.read_bytes())
    data[-100] ^= 1  # one bit of one weight
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="fail their checksum.*reinstall edgekit"):
        load_model("mobilenet_v3_small")


def test_missing_builtin_file_is_a_clear_error(copied_weights):
    (copied_weights / "mobilenet_v2_1.0_224.safetensors").unlink()
    with pytest.raises(InputError, match="missing from the installed edgekit"):
        load_model()


def test_index_entries_name_their_source(copied_weights):
    data = json.loads((copied_weights / builtin.INDEX_NAME).read_text())
    assert [m["source"] for m in data["models"]] == [src for *_, src in BUILTIN]


def test_demo_with_a_model_name_runs_its_builtin_weights():
    from edgekit.demo.select import load_classifier

    c = load_classifier("mobilenet_v3_small", threads=1)
    assert c.labels[0] == "background" and c.num_classes == 1001


# With ../shared: the built-in files are exactly what `edgekit weights import` makes of the
# published TFLite files, and score what those score.

@pytest.mark.shared
@pytest.mark.parametrize("arch,width,resolution,src", BUILTIN)
def test_builtin_equals_weights_import_bit_for_bit(arch, width, resolution, src):
    pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is not installed")
    from edgekit.datasets import read_labels
    from edgekit.models.importers import import_model

    models = shared_path("models")
    imported = import_model(models / src, arch, labels=read_labels(models / "imagenet_labels.txt"))
    ours = load_model(arch, width=width)
    theirs, mine = imported.state_dict(), ours.state_dict()
    assert mine.keys() == theirs.keys()
    for key, value in theirs.items():
        assert mine[key].dtype == value.dtype, key
        assert torch.equal(mine[key].view(torch.uint8) if value.dim() else mine[key],
                           value.view(torch.uint8) if value.dim() else value), key  # same bytes
    assert ours.meta.with_(weights=None) == imported.meta.with_(weights=None)


def _sample() -> list[tuple[Path, int]]:
    folder, classes = shared_path("imagenet-sample"), shared_path("imagenet-classes.tsv")
    index = {}
    for line in classes.read_text().splitlines():
        i, wnid, *_ = line.split("\t")
        index[wnid] = int(i)
    return [(p, index[p.name.split("_")[0]]) for p in sorted(folder.glob("*.JPEG"))]


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.parametrize("arch,expected", [("mobilenet_v2", 87.4), ("mobilenet_v3_small", 73.0)])
def test_builtin_top1_on_the_imagenet_sample(arch, expected):
    """The imported checkpoints' figures (ENVIRONMENT.md): V2 87.4%, V3-Small 73.0% of 500 photos."""
    sample = _sample()
    assert len(sample) == 500
    model = load_model(arch)
    pre = model.meta.preprocessing
    torch.set_num_threads(2)
    hits = 0
    for start in range(0, len(sample), 50):
        chunk = sample[start:start + 50]
        x = torch.from_numpy(np.stack([pre.apply(load_image(p)) for p, _ in chunk]))
        with torch.no_grad():
            top1 = model(x).argmax(1) - 1  # output 0 is "background"
        hits += int((top1 == torch.tensor([c for _, c in chunk])).sum())
    assert 100 * hits / len(sample) == pytest.approx(expected, abs=0.25)
