import pytest
import yaml

from edgekit.backends.base import PRECISIONS, list_backends
from edgekit.errors import InputError
from edgekit.targets import list_targets, load_target, parse_target

REQUIRED = {"rpi4", "rpi5", "coral-usb", "coral-devboard", "intel-cpu", "x86"}


def test_required_targets_exist():
    assert REQUIRED <= set(list_targets())


@pytest.mark.parametrize("name", list_targets())
def test_every_target_file_loads(name):
    t = load_target(name)
    assert t.name == name and t.cpu.cores >= 1 and t.threads >= 1
    for b in t.builds:
        assert b.backend in list_backends()
        assert set(b.precisions) <= set(PRECISIONS)
        assert b.why, f"{name}: say why {b.backend} is built"


def test_rpi4_profile():
    t = load_target("rpi4")
    assert t.cpu.arch == "aarch64" and "dotprod" not in t.cpu.features
    tflite = t.build_for("tflite")
    assert tflite.layout == "NHWC" and "int8" in tflite.precisions and tflite.io_dtype == "int8"
    assert "int8" in t.build_for("onnxruntime").precisions


def test_unknown_target_suggests():
    with pytest.raises(InputError, match="did you mean 'rpi4' or 'rpi5'"):
        load_target("rpi3")


@pytest.mark.parametrize("patch,message", [
    ({"thread": 2}, "unknown key 'thread'.*did you mean 'threads'"),
    ({"cpu": {"arch": "x86_64", "cores": 2, "coress": 1}}, "unknown key 'coress'"),
    ({"builds": [{"backend": "onnxrt", "precisions": ["fp32"]}]}, "unknown backend 'onnxrt'"),
    ({"builds": [{"backend": "onnxruntime", "precisions": ["int4"]}]}, "unknown precision 'int4'"),
    ({"builds": []}, "at least one backend"),
])
def test_bad_target_files(patch, message):
    data = {"name": "t", "description": "d", "cpu": {"arch": "x86_64", "cores": 2},
            "builds": [{"backend": "onnxruntime", "precisions": ["fp32"]}]}
    data.update(patch)
    with pytest.raises(InputError, match=message):
        parse_target(data, "t.yaml")


def test_target_from_path_and_bad_yaml(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text(yaml.safe_dump({"name": "mine", "description": "d",
                                    "cpu": {"arch": "x86_64", "cores": 2},
                                    "builds": [{"backend": "onnxruntime", "precisions": ["fp32"]}]}))
    assert load_target(str(good)).name == "mine"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(InputError, match="invalid YAML"):
        load_target(str(bad))
