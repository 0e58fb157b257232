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
    from edgekit.manifest import CHECKPOINT_SHA256, Manifest, sha256_of

    assert Manifest.read(tmp / "out").model[CHECKPOINT_SHA256] == sha256_of([ckpt])  # convert records it
    alone = evaluate([tmp / "out"], data)  # only what was passed: no row for the recorded checkpoint
    assert [(r.backend, r.precision) for r in alone] == [("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    # ... which is the float reference all the same (unchanged since convert: its sha256 matches)
    assert alone[0].agreement_with_float == 1.0 and alone[1].agreement_with_float is not None
    results = evaluate([ckpt, tmp / "out"], data)
    assert [(r.backend, r.precision) for r in results] == [
        ("pytorch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    torch_r, fp32_r, int8_r = results
    assert all(r.n == 4 for r in results)
    assert fp32_r.top1 == torch_r.top1 and fp32_r.agreement_with_float == 1.0
    assert 0 <= int8_r.agreement_with_float <= 1
    assert torch_r.top5 == 1.0  # 4 classes: the true class is always in the top 5
    again = evaluate([ckpt, tmp / "out", ckpt], data)  # the checkpoint named twice: once
    assert [(r.backend, r.precision) for r in again] == [(r.backend, r.precision) for r in results]


def _eval_cli(*args):
    return subprocess.run([sys.executable, "-m", "edgekit.cli.main", "eval", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_tampered_artifact_is_refused_unless_no_verify(setup, tmp_path):
    tmp, ckpt, data = setup
    folder = shutil.copytree(tmp / "out", tmp_path / "out")
    (folder / "model_int8.onnx").write_bytes((folder / "model_fp32.onnx").read_bytes())
    for target in (folder, folder / "model_int8.onnx"):
        out = _eval_cli(target, "--data", data)
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert "model_int8.onnx does not match the sha256 in" in out.stderr and "--no-verify" in out.stderr
    out = _eval_cli(folder, "--data", data, "--no-verify", "--json")
    assert out.returncode == 0, out.stderr
    assert [r["precision"] for r in json.loads(out.stdout)] == ["fp32", "int8"]


def test_recorded_checkpoint_sha256_is_the_hidden_float_reference(setup, tmp_path):
    from edgekit.manifest import CHECKPOINT_SHA256, sha256_of

    tmp, ckpt, data = setup
    folder = shutil.copytree(tmp / "out", tmp_path / "out")
    mine = shutil.copy(ckpt, tmp_path / "mine.pth")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["model"].update({"weights": str(mine), CHECKPOINT_SHA256: sha256_of([mine])})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    fp32_r, int8_r = evaluate([folder], data)  # no checkpoint row, but agreement with it
    assert fp32_r.agreement_with_float == 1.0 and int8_r.agreement_with_float is not None
    other = create("mobilenet_v3_small", width=0.75, resolution=96, num_classes=4, labels=LABELS)
    save_checkpoint(other.eval(), mine)  # a different model now sits at the recorded path
    with pytest.raises(InputError, match="mine.pth does not match the sha256 in .*--no-verify"):
        evaluate([folder], data)
    fp32_r, _ = evaluate([folder], data, verify=False)  # the folder's own fp32 is the reference
    assert fp32_r.agreement_with_float is None


def test_bare_state_dict_message_says_what_eval_takes(setup, tmp_path):
    import torch

    tmp, ckpt, data = setup
    bare = tmp_path / "bare.pth"
    torch.save(create("mobilenet_v3_small", width=0.75, resolution=96).state_dict(), bare)
    out = _eval_cli(bare, "--data", data)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "eval takes edgekit checkpoints, artifacts and convert folders" in out.stderr
    assert f"edgekit convert TARGET --model NAME --weights {bare}" in out.stderr
    assert "(and --width)" not in out.stderr


def test_eval_cli_json_and_tsv(setup, tmp_path):
    tmp, ckpt, data = setup
    tsv = tmp_path / "list.tsv"
    tsv.write_text(f"{data / 'cat' / 'chelsea_cat.jpg'}\t0\n{data / 'brick wall' / 'brick.jpg'}\tbrick wall\n")
    out = subprocess.run([sys.executable, "-m", "edgekit.cli.main", "eval", str(ckpt),
                          str(tmp / "out" / "model_int8.onnx"), "--data", str(tsv), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert set(rows[0]) == {"path", "backend", "precision", "top1", "top5", "n", "agreement_with_float",
                            "skipped_unreadable"}
    assert rows[1]["n"] == 2 and rows[1]["agreement_with_float"] is not None
    assert rows[1]["skipped_unreadable"] == 0


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
    assert _reference(loose, cands) is None  # no known source: another model's output means nothing
    assert _reference(ca, cands) is None and _reference(cb, cands) is None


def test_two_checkpoints_do_not_agree_with_each_other(setup):
    """B's agreement with A (a different model) was shown as B's agreement with float."""
    tmp, ckpt, data = setup
    other = create("mobilenet_v3_small", width=0.75, resolution=96, num_classes=4, labels=LABELS)
    randomize_statistics(other)
    other_ckpt = save_checkpoint(other.eval(), tmp / "other.pth")
    results = evaluate([ckpt, other_ckpt], data)
    assert [r.agreement_with_float for r in results] == [None, None]


def test_two_folders_each_against_their_own_float(setup, tmp_path):
    """A folder whose checkpoint is gone compares its artifacts with its own fp32 artifact, never
    with another folder's checkpoint; the table tells the two model_fp32.onnx apart."""
    tmp, ckpt, data = setup
    orphan = tmp_path / "orphan"
    shutil.copytree(tmp / "out", orphan)
    manifest = json.loads((orphan / "manifest.json").read_text())
    manifest["model"]["weights"] = str(tmp_path / "deleted.pth")
    (orphan / "manifest.json").write_text(json.dumps(manifest))
    results = evaluate([ckpt, tmp / "out", orphan], data)
    assert [(r.backend, r.precision) for r in results] == [
        ("pytorch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"),
        ("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    own_fp32, own_int8, orphan_fp32, orphan_int8 = results[1:]
    assert own_fp32.agreement_with_float == 1.0 and own_int8.agreement_with_float is not None
    assert orphan_fp32.agreement_with_float is None  # it is its folder's float reference
    assert orphan_int8.agreement_with_float == own_int8.agreement_with_float  # same files, own fp32

    out = subprocess.run([sys.executable, "-m", "edgekit.cli.main", "eval", str(tmp / "out"), str(orphan),
                          "--data", str(data)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "out/model_fp32.onnx" in out.stdout and "orphan/model_fp32.onnx" in out.stdout


def test_short_names():
    from edgekit.cli.eval_cmd import short_names

    assert short_names(["/b/rpi4/model_fp32.onnx", "/b/jetson/model_fp32.onnx", "/w/v2.pth"]) == [
        "rpi4/model_fp32.onnx", "jetson/model_fp32.onnx", "v2.pth"]
    assert short_names(["x/rpi4/m.onnx", "y/rpi4/m.onnx"]) == ["x/rpi4/m.onnx", "y/rpi4/m.onnx"]


def test_unreadable_images_are_reported(setup, tmp_path):
    tmp, ckpt, data = setup
    tsv = tmp_path / "bad1.tsv"
    tsv.write_text(f"{data / 'cat' / 'chelsea_cat.jpg'}\tcat\n/nope.jpg\t3\n")
    messages = []
    [r] = evaluate([ckpt], tsv, progress=messages.append)
    assert r.n == 1 and r.skipped_unreadable == 1
    assert "skipped 1 unreadable image(s): /nope.jpg" in messages
    out = subprocess.run([sys.executable, "-m", "edgekit.cli.main", "eval", str(ckpt), "--data", str(tsv),
                          "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "skipped 1 unreadable image(s): /nope.jpg" in out.stderr
    assert json.loads(out.stdout)[0]["skipped_unreadable"] == 1


def test_negative_class_index_is_rejected(setup, tmp_path):
    """On a 1001-class model -1 became output 0 ("background") and scored 0% without a word."""
    tmp, ckpt, data = setup
    model = create("mobilenet_v3_small", width=0.75, resolution=96, num_classes=1001)
    tf_like = save_checkpoint(model.eval(), tmp_path / "tf_like.pth")
    tsv = tmp_path / "neg.tsv"
    cat = data / "cat" / "chelsea_cat.jpg"
    tsv.write_text(f"# photos\n{cat}\t3\n{cat}\t-1\n")
    with pytest.raises(InputError, match=r"neg.tsv:3: class index -1 is negative"):
        evaluate([tf_like], tsv)
    out = subprocess.run([sys.executable, "-m", "edgekit.cli.main", "eval", str(ckpt), "--data", str(tsv)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "class index -1 is negative" in out.stderr
    assert "Traceback" not in out.stderr


def test_bare_artifact_with_normalisation(setup, tmp_path):
    """An artifact no manifest lists (a reference model): size and classes read from the file,
    the value range from --normalisation, class names the other models'."""
    from edgekit.evaluate import BareInput

    tmp, ckpt, data = setup
    bare = tmp_path / "reference.onnx"
    shutil.copy(tmp / "out" / "model_fp32.onnx", bare)
    results = evaluate([tmp / "out", bare], data, bare=BareInput("torchvision"))
    listed = next(r for r in results if r.path.endswith("model_fp32.onnx"))
    got = results[-1]
    assert (got.path, got.backend, got.precision, got.n) == (str(bare), "onnxruntime", "fp32", 4)
    assert (got.top1, got.top5) == (listed.top1, listed.top5)
    # a different value range is a different input: the same file scores on what it is fed
    unit = evaluate([bare], data, bare=BareInput("unit", tuple(LABELS)))[0]
    assert unit.n == 4

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "edgekit.cli.main", "eval", str(bare), "--data", str(data),
                               *args], capture_output=True, text=True, timeout=300)

    for args, message in [((), "give --normalisation"),
                          (("--labels", str(tmp_path / "l.txt")), "--labels applies with --normalisation"),
                          (("--normalisation", "unit", "--labels", str(tmp_path / "l.txt")),
                           "2 labels for reference.onnx, which has 4 outputs")]:
        (tmp_path / "l.txt").write_text("a\nb\n")
        done = cli(*args)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_checkpoint_runs_in_onnxruntime_with_pytorch_results(setup):
    """A checkpoint is evaluated in ONNX Runtime (checked against PyTorch first): the same top-1
    for every image as PyTorch's own forward."""
    from edgekit.datasets import load_images
    from edgekit.forward import fastest_runner
    from edgekit.models.weights import load_checkpoint
    from edgekit.source import ModelSource

    tmp, ckpt, data = setup
    model = load_checkpoint(ckpt)
    dataset = load_labelled(data, list(LABELS), 4)
    images, _, _ = load_images(dataset, model.meta.preprocessing)
    runner = fastest_runner(model, model.meta, images)
    assert runner.runtime == "onnxruntime", runner.why
    ours, torch_logits = runner.run(images), ModelSource.from_module(model).reference(images)
    assert (ours.argmax(1) == torch_logits.argmax(1)).all()
    assert abs(ours - torch_logits).max() <= 1e-3 * abs(torch_logits).max()
    said = []
    evaluate([ckpt], data, progress=said.append)
    assert any("run in onnxruntime (checked against PyTorch first)" in m for m in said)
