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
    # values are type- and range-checked
    ({"threads": "abc"}, r"t.yaml: threads must be an integer >= 1, got 'abc'"),
    ({"threads": 0}, r"threads must be an integer >= 1, got 0"),
    ({"threads": 2.5}, r"threads must be an integer >= 1"),
    ({"cpu": {"arch": "x86_64", "cores": -2}}, r"t.yaml: cpu.cores must be an integer in \[1, 4096\], got -2"),
    ({"parity": {"int8_min_agreement": 85}},
     r"parity.int8_min_agreement must be a fraction in \[0, 1\], got 85 \(did you mean 0.85\?\)"),
    ({"parity": {"fp16_min_agreement": -0.1}}, r"parity.fp16_min_agreement must be a fraction in \[0, 1\]"),
    ({"parity": {"fp32_max_abs_diff": "small"}}, r"parity.fp32_max_abs_diff must be a number >= 0"),
    ({"parity": {"int8_min_sqnr_db": float("nan")}}, r"parity.int8_min_sqnr_db must be a number >= 0"),
    ({"builds": [{"backend": "onnxruntime", "precisions": ["fp32"], "per_channel": "maybe"}]},
     r"builds\[0\].per_channel must be true or false"),
    # strings are strings, lists of strings lists of strings
    ({"name": ["a", "b"]}, r"t.yaml: name must be a string, got \['a', 'b'\]"),
    ({"description": {"a": 1}}, r"t.yaml: description must be a string, got \{'a': 1\}"),
    ({"cpu": {"arch": 5, "cores": 2}}, r"t.yaml: cpu.arch must be a string, got 5"),
    ({"cpu": {"arch": "x86_64", "cores": 2, "features": 7}}, r"cpu.features must be a list of strings, got 7"),
    ({"builds": [{"backend": "onnxruntime", "precisions": ["fp32"], "why": 5}]},
     r"builds\[0\].why must be a string, got 5"),
    ({"name": "../up"}, r"name must be a plain folder name"),
    # precisions: at least one, each once; a backend built once
    ({"builds": [{"backend": "onnxruntime", "precisions": []}]}, r"t.yaml: onnxruntime lists no precisions"),
    ({"builds": [{"backend": "onnxruntime", "precisions": ["fp32", "int8", "fp32"]}]},
     r"precision 'fp32' is listed twice for onnxruntime"),
    ({"builds": [{"backend": "onnxruntime", "precisions": ["fp32"]},
                 {"backend": "onnxruntime", "precisions": ["int8"]}]},
     r"t.yaml: backend 'onnxruntime' is listed twice in builds"),
    # threads bounded by the target's cores (limits.max_threads)
    ({"threads": 10**20}, r"t.yaml: threads 100000000000000000000 is more than 16 \(4 per core for 2 cores"),
    ({"threads": 1e20}, r"threads must be an integer >= 1, got 1e\+20"),
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


GOOD_YAML = ("name: t\ndescription: d\ncpu: {arch: x86_64, cores: 2}\n"
             "builds: [{backend: onnxruntime, precisions: [fp32]}]\n")


@pytest.mark.parametrize("text,message", [
    (GOOD_YAML.replace("cores: 2", "cores: 2, features: 7"), r"cpu.features must be a list of strings, got 7"),
    (GOOD_YAML.encode() + b"notes: caf\xe9\n", r"t.yaml: not a UTF-8 text file \(byte \d+: invalid"),
    (GOOD_YAML.replace("name: t", "name: [a, b]"), r"name must be a string, got \['a', 'b'\]"),
    (GOOD_YAML.replace("description: d", "description: {a: 1}"), r"description must be a string"),
    (GOOD_YAML.replace("arch: x86_64", "arch: 5"), r"cpu.arch must be a string, got 5"),
    (GOOD_YAML.replace("[fp32]", "[]"), r"onnxruntime lists no precisions"),
    (GOOD_YAML + "threads: 1e20\n", r"threads must be an integer >= 1, got '1e20'"),
    (GOOD_YAML + "threads: 100000000000000000000\n", r"threads 100000000000000000000 is more than 16"),
    (GOOD_YAML.replace("precisions: [fp32]}]", "precisions: [fp32]}, {backend: onnxruntime, precisions: [int8]}]"),
     r"backend 'onnxruntime' is listed twice in builds"),
])
def test_bad_target_file_is_one_line_input_error(tmp_path, text, message):
    path = tmp_path / "t.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(InputError, match=message) as info:
        load_target(str(path))
    assert "\n" not in str(info.value)


def test_missing_target_file_is_not_an_unknown_target(tmp_path):
    with pytest.raises(InputError, match="target file not found: .*nonexist.yaml"):
        load_target(str(tmp_path / "nonexist.yaml"))
    with pytest.raises(InputError, match="did you mean the target 'rpi4'"):
        load_target("rpi4.yaml")
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        load_target(str(tmp_path / "dir.yaml"))


def test_targets_and_calibration_photos_ship_inside_the_package():
    """Installed from a wheel, only the package folder exists: the data must live in it, and the
    top-level targets/ and calibration/ are links to it."""
    from pathlib import Path

    import edgekit
    from edgekit.calibration import DEFAULT_CALIBRATION_DIR, list_images
    from edgekit.targets import TARGETS_DIR

    package = Path(edgekit.__file__).resolve().parent
    repo = package.parent
    assert TARGETS_DIR.is_relative_to(package) and DEFAULT_CALIBRATION_DIR.is_relative_to(package)
    assert REQUIRED <= {p.stem for p in TARGETS_DIR.glob("*.yaml")}
    assert len(list_images(DEFAULT_CALIBRATION_DIR)) >= 10
    assert (DEFAULT_CALIBRATION_DIR / "README.md").is_file()
    if (repo / "pyproject.toml").is_file():  # a checkout, not an installed package
        assert (repo / "targets").resolve() == TARGETS_DIR
        assert (repo / "calibration").resolve() == DEFAULT_CALIBRATION_DIR
