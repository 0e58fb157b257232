"""`edgekit train` on tiny real subsets of CIFAR-10 (a few images per class, 64 px, 1-2 epochs)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import shared_path
from edgekit.errors import InputError
from edgekit.train import train

pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")
CLASSES = ("airplane", "cat", "ship")
PER_CLASS = 6
FAST = dict(model="mobilenet_v3_small", resolution=64, epochs=1, batch_size=8, views=1)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """A folder of class subfolders: PER_CLASS CIFAR-10 test images of each of CLASSES."""
    tar_path = shared_path("cifar10", "test.tar")
    root = tmp_path_factory.mktemp("cifar") / "data"
    taken = {c: 0 for c in CLASSES}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if member.isfile() and len(parts) == 3 and parts[1] in taken and taken[parts[1]] < PER_CLASS:
                (root / parts[1]).mkdir(parents=True, exist_ok=True)
                (root / parts[1] / parts[2]).write_bytes(tar.extractfile(member).read())
                taken[parts[1]] += 1
            if all(n == PER_CLASS for n in taken.values()):
                break
    return root


def copy_data(cifar: Path, dst: Path) -> Path:
    return Path(shutil.copytree(cifar, dst))


def run_cli(*args, timeout=300, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, **kwargs)


def test_train_end_to_end_labels_reach_the_manifest_and_eval(cifar, tmp_path):
    from edgekit.convert import convert
    from edgekit.evaluate import evaluate
    from edgekit.manifest import Manifest
    from edgekit.models.weights import load_checkpoint

    out = tmp_path / "model.pth"
    result = train(cifar, out, cache_dir=tmp_path / "cache", **{**FAST, "epochs": 2})
    assert result.labels == list(CLASSES) and result.runtime == "onnxruntime"
    assert result.train_images + result.val_images == len(CLASSES) * PER_CLASS
    assert len(result.history) == 2 and 1 <= result.best_epoch <= 2
    assert result.extract_images_per_second > 0 and result.train_images_per_second > 0
    json.dumps(result.to_dict())
    model = load_checkpoint(out)
    assert model.meta.labels == CLASSES and model.meta.num_classes == 3
    assert model.meta.resolution == 64 and model.meta.preprocessing.size == 64
    target = tmp_path / "ort.yaml"
    target.write_text(yaml.safe_dump({
        "name": "ort", "description": "d", "cpu": {"arch": "x86_64", "cores": 2},
        "builds": [{"backend": "onnxruntime", "precisions": ["fp32"], "why": "t"}]}))
    convert(str(target), weights=str(out), out=tmp_path / "build", calib_size=4, check=False)
    manifest = Manifest.read(tmp_path / "build")
    assert tuple(manifest.model_meta().labels) == CLASSES
    # eval reads the labels from the checkpoint: folder names resolve to them; the checkpoint runs
    # in ONNX Runtime and agrees with its own ONNX artifact image for image
    ckpt_r, fp32_r = evaluate([out, tmp_path / "build"], cifar)
    assert ckpt_r.n == fp32_r.n == len(CLASSES) * PER_CLASS
    assert ckpt_r.top1 == fp32_r.top1 and fp32_r.agreement_with_float == 1.0


def test_cache_is_reused_and_invalidated(cifar, tmp_path):
    data = copy_data(cifar, tmp_path / "data")
    cache = tmp_path / "cache"
    first = train(data, tmp_path / "a.pth", cache_dir=cache, **FAST)
    assert not first.cache_hit
    again = train(data, tmp_path / "b.pth", cache_dir=cache, lr=0.01, **FAST)  # only the head changes
    assert again.cache_hit and again.extract_images_per_second is None
    other_views = train(data, tmp_path / "c.pth", cache_dir=cache, **{**FAST, "views": 2})
    assert not other_views.cache_hit
    # one image changed (same name, other pixels): a new key, never the stale features
    victim = sorted((data / "cat").iterdir())[0]
    victim.write_bytes(sorted((data / "ship").iterdir())[0].read_bytes())
    changed = train(data, tmp_path / "d.pth", cache_dir=cache, **FAST)
    assert not changed.cache_hit
    # first: train + val; views=2: train only (val has no augmented views); changed: the one set
    # holding the victim
    assert len(list(cache.glob("*.npy"))) == 4


def test_resume_continues_to_the_same_checkpoint(cifar, tmp_path):
    from safetensors.torch import load_file

    cache = tmp_path / "cache"
    whole = train(cifar, tmp_path / "whole.safetensors", cache_dir=cache, **{**FAST, "epochs": 2})
    half = tmp_path / "half.safetensors"
    train(cifar, half, cache_dir=cache, **FAST)
    resumed = train(cifar, half, cache_dir=cache, resume=True, **{**FAST, "epochs": 2})
    assert resumed.resumed_from_epoch == 1 and len(resumed.history) == 2
    assert [h["val_top1"] for h in resumed.history] == [h["val_top1"] for h in whole.history]
    a, b = load_file(tmp_path / "whole.safetensors"), load_file(half)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    with pytest.raises(InputError, match="has done 2 epochs already"):
        train(cifar, half, cache_dir=cache, resume=True, **{**FAST, "epochs": 2})
    with pytest.raises(InputError, match="from a run with other data, model or options"):
        train(cifar, half, cache_dir=cache, resume=True, **{**FAST, "epochs": 3, "lr": 0.01})
    with pytest.raises(InputError, match="no training state"):
        train(cifar, tmp_path / "never.pth", cache_dir=cache, resume=True, **FAST)


def test_same_seed_same_bytes(cifar, tmp_path):
    cache = tmp_path / "cache"
    runs = [train(cifar, tmp_path / f"{name}.safetensors", cache_dir=cache, seed=seed, fine_tune=2, **FAST)
            for name, seed in (("a", 3), ("b", 3), ("c", 4))]
    a, b, c = (Path(r.checkpoint).read_bytes() for r in runs)
    assert a == b  # safetensors: the same tensors and metadata -> the same file
    assert a != c


def test_sigterm_keeps_the_last_good_checkpoint(cifar, tmp_path):
    out = tmp_path / "model.pth"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgekit", "train", "--data", str(cifar), "--out", str(out),
         "--cache-dir", str(tmp_path / "cache"), "--model", "mobilenet_v3_small", "--resolution", "64",
         "--views", "0", "--epochs", "1000", "--batch-size", "1", "--fine-tune", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 240
    while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert out.exists(), proc.communicate()[1] if proc.poll() is not None else "no checkpoint in 240 s"
    time.sleep(1.0)  # into a later epoch
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "interrupted (SIGTERM)" in err and "--resume continues" in err
    from edgekit.models.weights import load_checkpoint

    assert load_checkpoint(out).meta.labels == CLASSES  # whole and readable
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _errors_case(cifar: Path, tmp: Path, case: str) -> list:
    data = copy_data(cifar, tmp / "data")
    base = ["train", "--data", data, "--out", tmp / "m.pth", "--cache-dir", tmp / "cache",
            "--resolution", "64", "--epochs", "1"]
    if case == "one class":
        for c in CLASSES[1:]:
            shutil.rmtree(data / c)
    elif case == "empty class":
        (data / "dog").mkdir()
    elif case == "val classes differ":
        val = copy_data(cifar, tmp / "val")
        (val / "cat").rename(val / "kitten")
        base += ["--val", val]
    elif case == "val split too small":
        base += ["--val-split", "0.05"]
    elif case == "out is an input":
        base[4] = sorted((data / "cat").iterdir())[0]
    elif case == "out is the data folder":
        base[4] = data
    return base


ERRORS = {
    "one class": "one class only (airplane)",
    "empty class": "class folder",
    "val classes differ": "only in --data: cat; only in --val: kitten",
    "val split too small": "leaves no image to validate on",
    "out is an input": "would overwrite the input",
    "out is the data folder": "would overwrite the input",
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_bad_data_is_one_line(cifar, tmp_path, case):
    out = run_cli(*_errors_case(cifar, tmp_path, case))
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and ERRORS[case] in lines[-1], out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "m.pth").exists()


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "--epochs"), (["--epochs", "100000"], "--epochs"),
    (["--lr", "0"], "--lr"), (["--lr", "100"], "--lr"),
    (["--batch-size", "0"], "--batch-size"), (["--batch-size", "100000"], "--batch-size"),
    (["--val-split", "1.5"], "--val-split"), (["--views", "1000"], "--views"),
    (["--freeze-backbone", "--fine-tune", "2"], "exclude each other"),
    (["--fine-tune", "99"], "--fine-tune 99"),
])
def test_bad_numbers(cifar, tmp_path, args, message):
    out = run_cli("train", "--data", cifar, "--out", tmp_path / "m.pth", "--cache-dir", tmp_path / "c",
                  "--resolution", "64", *args)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_unreadable_images_are_skipped_and_named(cifar, tmp_path):
    data = copy_data(cifar, tmp_path / "data")
    (data / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    out = run_cli("train", "--data", data, "--out", tmp_path / "m.pth", "--cache-dir", tmp_path / "cache",
                  "--resolution", "64", "--epochs", "1", "--views", "0", "--val-split", "0.3", "--json")
    assert out.returncode == 0, out.stderr
    assert "skipped 1 unreadable image(s): " in out.stderr and "broken.jpg" in out.stderr
    result = json.loads(out.stdout)
    assert [Path(p).name for p in result["unreadable"]] == ["broken.jpg"]


def test_no_validation_keeps_the_last_epoch(cifar, tmp_path):
    """--val-split 0: every image trains, nothing is validated, the last epoch's checkpoint is
    the one written (each epoch overwrites the previous)."""
    from edgekit.models.weights import load_checkpoint

    out = tmp_path / "m.pth"
    result = train(cifar, out, val_split=0.0, cache_dir=tmp_path / "cache", seed=1, **{**FAST, "epochs": 2})
    assert result.val_images == 0 and result.train_images == len(CLASSES) * PER_CLASS
    assert result.best_val_top1 is None and result.best_epoch == 2
    assert [h["val_top1"] for h in result.history] == [None, None]
    assert list(load_checkpoint(out).meta.labels) == list(CLASSES)
    cli = run_cli("train", "--data", cifar, "--out", tmp_path / "c.pth", "--cache-dir", tmp_path / "cache",
                  "--resolution", "64", "--epochs", "1", "--views", "1", "--val-split", "0")
    assert cli.returncode == 0, cli.stderr
    assert "no validation images (the last epoch is kept)" in cli.stderr and "(no validation)" in cli.stdout


def test_small_images_are_not_centre_cropped(cifar, tmp_path):
    """CIFAR's 32 px images: --crop auto stretches the whole image (cutting 12.5% of the border
    of a 32 px image cuts into the object); center keeps the backbone's crop. The checkpoint
    records which, so eval, convert and the demo frame images as training did."""
    from edgekit.models.weights import load_checkpoint

    auto = train(cifar, tmp_path / "auto.pth", val_split=0.0, cache_dir=tmp_path / "cache", **FAST)
    assert auto.crop == "none" and load_checkpoint(tmp_path / "auto.pth").meta.preprocessing.resize == 0
    centre = train(cifar, tmp_path / "centre.pth", val_split=0.0, cache_dir=tmp_path / "cache", crop="center", **FAST)
    pre = load_checkpoint(tmp_path / "centre.pth").meta.preprocessing
    assert centre.crop == "center" and pre.resize > pre.size
    with pytest.raises(InputError, match="--crop"):
        train(cifar, tmp_path / "x.pth", cache_dir=tmp_path / "cache", crop="middle", **FAST)
