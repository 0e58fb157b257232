import json
import shutil
import subprocess
import sys

import pytest
import yaml

from edgekit.calibration import DEFAULT_CALIBRATION_DIR
from edgekit.convert import convert
from edgekit.datasets import background_offset, load_labelled
from edgekit.errors import InputError
from edgekit.evaluate import evaluate
from edgekit.models import create
from edgekit.models.loading import randomize_statistics
from edgekit.models.weights import save_checkpoint

pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")
LABELS = ["cat", "coffee cup", "rocket ship", "brick wall"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    model = create("mobilenet_v3_small", width=0.75, resolution=96, num_classes=4, labels=LABELS)
    randomize_statistics(model)
    ckpt = save_checkpoint(model.eval(), tmp / "tiny.pth")
    data = tmp / "data"
    for cls, photo in [("cat", "chelsea_cat.jpg"), ("coffee_cup", "coffee.jpg"),
                       ("rocket ship", "rocket.jpg"), ("brick wall", "brick.jpg")]:
        (data / cls).mkdir(parents=True)
        shutil.copy(DEFAULT_CALIBRATION_DIR / photo, data / cls / photo)
    target = tmp / "ort.yaml"
    target.write_text(yaml.safe_dump({
        "name": "ort", "description": "d", "cpu": {"arch": "x86_64", "cores": 2},
        "builds": [{"backend": "onnxruntime", "precisions": ["fp32", "int8"], "why": "t"}]}))
    convert(str(target), weights=str(ckpt), out=tmp / "out", calib_size=4, check=False)
    return tmp, ckpt, data


def test_eval_folder_and_checkpoint(setup):
    tmp, ckpt, data = setup
    results = evaluate([tmp / "out"], data)
    assert [(r.backend, r.precision) for r in results] == [
        ("pytorch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    torch_r, fp32_r, int8_r = results
    assert all(r.n == 4 for r in results)
    assert fp32_r.top1 == torch_r.top1 and fp32_r.agreement_with_float == 1.0
    assert 0 <= int8_r.agreement_with_float <= 1
    assert torch_r.top5 == 1.0  # 4 classes: the true class is always in the top 5
    again = evaluate([tmp / "out", ckpt], data)  # the folder's checkpoint named too: once
    assert [(r.backend, r.precision) for r in again] == [(r.backend, r.precision) for r in results]


def test_eval_cli_json_and_tsv(setup, tmp_path):
    tmp, ckpt, data = setup
    tsv = tmp_path / "list.tsv"
    tsv.write_text(f"{data / 'cat' / 'chelsea_cat.jpg'}\t0\n{data / 'brick wall' / 'brick.jpg'}\tbrick wall\n")
    out = subprocess.run([sys.executable, "-m", "edgekit.cli.main", "eval", str(ckpt),
                          str(tmp / "out" / "model_int8.onnx"), "--data", str(tsv), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert set(rows[0]) == {"path", "backend", "precision", "top1", "top5", "n", "agreement_with_float"}
    assert rows[1]["n"] == 2 and rows[1]["agreement_with_float"] is not None


def test_bad_labelled_data(setup, tmp_path):
    tmp, ckpt, data = setup
    (tmp_path / "zebra").mkdir()
    with pytest.raises(InputError, match="class 'zebra' is not one of the model's labels"):
        load_labelled(tmp_path, LABELS, 4)
    with pytest.raises(InputError, match="not found"):
        evaluate([ckpt], tmp_path / "missing")
    (tmp_path / "bad.tsv").write_text("x.jpg\t9\n")
    with pytest.raises(InputError, match="outside the model's 4 classes"):
        load_labelled(tmp_path / "bad.tsv", LABELS, 4)


def test_background_offset():
    assert background_offset(["background", "tench"], 1001) == 1
    assert background_offset(None, 1001) == 1
    assert background_offset(None, 1000) == 0


def test_each_artifact_is_compared_with_its_own_checkpoint(tmp_path):
    """Two builds of different models in one call: an artifact's agreement is with the checkpoint
    it was converted from, not with the first model named."""
    from edgekit.evaluate import Candidate, _reference
    from edgekit.preprocessing import Preprocessing

    pre = Preprocessing.torchvision(224)
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    for p in (a, b):
        p.write_bytes(b"")
    ca = Candidate(a, "pytorch", "fp32", pre, None, 10, a)
    cb = Candidate(b, "pytorch", "fp32", pre, None, 10, b)
    art_a = Candidate(tmp_path / "a.onnx", "onnxruntime", "int8", pre, None, 10, a)
    art_b = Candidate(tmp_path / "b.onnx", "onnxruntime", "int8", pre, None, 10, b)
    loose = Candidate(tmp_path / "c.onnx", "onnxruntime", "fp32", pre, None, 10, None)
    cands = [ca, art_a, cb, art_b, loose]
    assert _reference(art_a, cands) is ca
    assert _reference(art_b, cands) is cb
    assert _reference(loose, cands) is ca  # no known source: the first PyTorch model
