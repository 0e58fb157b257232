import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgekit.bench import emulate
from edgekit.bench.local import RUNNER
from edgekit.errors import EdgekitError, MissingToolError, ParityError
from edgekit.targets import ParitySpec, parse_target


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "edgekit.cli.main", *args], capture_output=True,
                          text=True, timeout=1800, env=env)


# -- pure parts -------------------------------------------------------------------------------


def test_cpuinfo_is_arm_format_per_core():
    text = emulate.cpuinfo_text("cortex-a72", 2)
    assert text.count("processor\t: ") == 2 and "processor\t: 1\n" in text
    assert "CPU implementer\t: 0x41\n" in text and "CPU architecture: 8\n" in text
    assert "CPU part\t: 0xd08\n" in text
    assert "Features\t: fp asimd evtstrm crc32 cpuid\n" in text  # a Pi 4 has no dot product
    assert "asimddp" in emulate.cpuinfo_text("cortex-a76", 1)


def test_write_cpuinfo_replaces_the_proc_symlink(tmp_path):
    (tmp_path / "proc").symlink_to("/proc")  # what debootstrap leaves inside a container
    emulate.write_cpuinfo(tmp_path, "neoverse-n1")
    assert not (tmp_path / "proc").is_symlink()
    assert "CPU part\t: 0xd0c" in (tmp_path / "proc" / "cpuinfo").read_text()


@pytest.mark.parametrize("target,cpu", [("rpi4", "cortex-a72"), ("rpi5", "cortex-a76"),
                                        ("coral-devboard", "cortex-a53"), ("x86", "neoverse-n1"),
                                        ("my_board.yaml", "neoverse-n1")])
def test_cpu_follows_the_target(target, cpu):
    assert emulate.cpu_for(SimpleNamespace(target=target))[0] == cpu
    assert emulate.cpu_for(None)[0] == emulate.DEFAULT_CPU


def test_commands_are_argument_lists(tmp_path):
    root = tmp_path / "root"
    boot = emulate.debootstrap_command(root)
    assert boot[0].endswith("debootstrap")
    assert boot[1:] == ["--foreign", "--arch=arm64", "--variant=minbase", "--include=python3.11",
                        "bookworm", str(root), emulate.MIRROR]
    qemu = emulate.qemu_command(root, "cortex-a72")
    assert qemu[0].endswith("qemu-aarch64-static")
    assert qemu[1:] == ["-cpu", "cortex-a72", "-L", str(root), str(root / "usr/bin/python3.11"),
                        str(RUNNER)]
    pip = emulate.pip_command(root / "site", {"numpy": "2.4.6", "onnxruntime": None})
    assert pip[:4] == [sys.executable, "-m", "pip", "install"]
    assert all(isinstance(a, str) for a in boot + qemu + pip)
    pairs = set(zip(pip, pip[1:]))
    assert {("--platform", "manylinux2014_aarch64"), ("--platform", "manylinux_2_28_aarch64"),
            ("--python-version", "3.11"), ("--target", str(root / "site"))} <= pairs
    assert "--only-binary=:all:" in pip and pip[-2:] == ["numpy==2.4.6", "onnxruntime"]
    env = emulate.guest_env()
    assert env["PYTHONPATH"] == "/opt/edgekit/site" and "VIRTUAL_ENV" not in env


def test_root_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv(emulate.ROOT_ENV, str(tmp_path / "r"))
    assert emulate.root_dir() == tmp_path / "r"
    monkeypatch.delenv(emulate.ROOT_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert emulate.root_dir() == tmp_path / "edgekit" / "aarch64-root"


def _ok(precision: str, match: emulate.OutputMatch, parity=ParitySpec()) -> bool:
    return not emulate.tolerance(parity, precision).failures(match.parity)


def test_int8_outputs_compare_in_steps():
    rng = np.random.default_rng(0)
    x86 = rng.integers(-128, 60, size=(4, 1, 50)).astype(np.int8)
    x86[:, 0, 3] = 120  # a clear top-1
    arm = x86.copy()
    arm[1, 0, 5] += 1
    m = emulate.compare(x86, arm, (0.25, -10))
    assert m.max_steps == 1 and m.parity.max_abs_diff == 0.25 and m.parity.top1_agreement == 1.0
    assert m.parity.reference_max_abs == (120 + 10) * 0.25  # dequantized with the zero point
    assert not m.identical and m.parity.sqnr_db > 40 and _ok("int8", m)
    same = emulate.compare(x86, x86)
    assert same.identical and same.parity.sqnr_db == float("inf")
    noisy = (x86 + rng.integers(-40, 40, size=x86.shape)).clip(-128, 127).astype(np.int8)
    m = emulate.compare(x86, noisy, (0.25, -10))
    assert m.max_steps >= 30 and m.parity.sqnr_db < 20 and not _ok("int8", m)


def test_the_targets_tolerance_between_two_runs():
    """Twice the target's fp32 allowance (each run may be that far from the source); the int8
    SQNR floor 10 dB above the target's; a target's own parity section moves both."""
    default = ParitySpec()
    assert emulate.tolerance(default, "fp32").to_dict() == {"max_abs_diff": 2e-4}
    assert emulate.tolerance(default, "int8").to_dict() == {"min_top1_agreement": 0.85, "min_sqnr_db": 20.0}
    assert emulate.tolerance(default, "unknown") == emulate.tolerance(default, "int8")  # a user's file
    strict = parse_target({"name": "b", "description": "", "cpu": {"arch": "aarch64", "cores": 4},
                           "builds": [{"backend": "tflite", "precisions": ["int8"]}],
                           "parity": {"int8_min_sqnr_db": 25, "fp32_max_abs_diff": 1e-3}}).parity
    assert emulate.tolerance(strict, "int8").min_sqnr_db == 35
    x86 = np.zeros((2, 1, 5), np.float32)
    x86[:, 0, 1] = 10.0
    arm = x86.copy()
    arm[0, 0, 2] = 1e-3
    assert not _ok("fp32", emulate.compare(x86, arm)) and _ok("fp32", emulate.compare(x86, arm), strict)


def test_float_outputs():
    x86 = np.zeros((2, 1, 5), np.float32)
    x86[:, 0, 1] = 10.0
    arm = x86.copy()
    arm[0, 0, 2] = 1.5e-4  # float rounding: within twice convert's fp32 tolerance
    m = emulate.compare(x86, arm)
    assert m.max_steps is None and m.parity.max_abs_diff == pytest.approx(1.5e-4)
    assert _ok("fp32", m)
    arm[0, 0, 2] = 1e-3
    assert not _ok("fp32", emulate.compare(x86, arm))
    big = x86 * 100
    assert _ok("fp32", emulate.compare(big, big + (arm - x86)))  # scaled to the logits
    # a dequantized (ONNX QDQ) output counts steps of its scale
    q = emulate.compare(x86, x86 + np.float32(0.2) * (np.arange(5) == 4), (0.1, 0))
    assert q.max_steps == 2 and q.parity.sqnr_db > 20 and _ok("int8", q)
    flipped = x86.copy()
    flipped[1, 0, 0] = 11.0
    f = emulate.compare(x86, flipped)
    assert f.parity.top1_agreement == 0.5 and not _ok("int8", f)
    with pytest.raises(ValueError, match="shapes differ"):
        emulate.compare(x86, x86[:1])


def test_report_check_names_the_artifacts():
    report = emulate.EmulationReport("aarch64", "cortex-a72", "", {"suite": "bookworm"}, [], "")
    x86 = np.arange(8, dtype=np.int8).reshape(4, 2)
    good = emulate.ArtifactMatch("/b/m_fp32.tflite", "tflite", "fp32", "int8",
                                 emulate.compare(x86, x86).to_dict(), ok=True)
    differs = emulate.compare(x86, x86[::-1].copy(), (0.1, 0))
    bad = emulate.ArtifactMatch("/b/m_int8.tflite", "tflite", "int8", "int8", differs.to_dict(),
                                emulate.tolerance(ParitySpec(), "int8").failures(differs.parity))
    crashed = emulate.ArtifactMatch("/b/m.onnx", "onnxruntime", "fp32", error="Illegal instruction")
    report.matches = [good]
    report.check()
    report.matches = [good, bad, crashed]
    with pytest.raises(ParityError, match=r"m_int8.tflite: max 6 quantization.*SQNR.*\(SQNR -0.6 dB < 20 dB\); "
                                          r"m.onnx: Illegal"):
        report.check()
    table = emulate.match_table(report, "t")
    assert table.row_count == 3 and "EMULATED: no timings" in table.caption
    assert "fp32 max abs diff <= 0.0002 (scaled to the logits); int8 top-1 >= 85%, SQNR >= 20 dB" \
        in table.caption


def test_emulated_backends_are_those_with_aarch64_wheels():
    assert [b.name for b in emulate.emulated_backends()] == ["onnxruntime", "tflite"]
    assert list(emulate.wanted_wheels()) == ["numpy", "onnxruntime", "ai-edge-litert"]


def test_missing_tools_name_the_packages(monkeypatch):
    monkeypatch.setattr(emulate, "find_program", lambda program: None)
    with pytest.raises(MissingToolError, match=r"needs qemu-aarch64-static: install with "
                                               r"'apt-get install qemu-user-static'"):
        emulate.check_tools(building=False)
    with pytest.raises(MissingToolError, match="apt-get install qemu-user-static debootstrap dpkg"):
        emulate.check_tools(building=True)


def test_cli_missing_qemu_is_one_line(tmp_path):
    (tmp_path / "m.tflite").write_bytes(b"not read before the tools are checked")
    env = {**os.environ, "PATH": str(tmp_path / "empty"), emulate.ROOT_ENV: str(tmp_path / "root")}
    out = cli("bench", str(tmp_path / "m.tflite"), "--emulate", "aarch64", env=env)
    assert out.returncode == 3, out.stderr
    assert out.stderr.startswith("error: --emulate aarch64 needs qemu-aarch64-static")
    assert "qemu-user-static" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args,code,message", [
    (["--threads", "2"], 2, "compares outputs only"),
    (["--device", "pi@host"], 2, "compares outputs only"),
])
def test_cli_emulate_usage(tmp_path, args, code, message):
    out = cli("bench", str(tmp_path / "m.tflite"), "--emulate", "aarch64", *args)
    assert out.returncode == code and message in out.stderr


def test_nothing_to_emulate(tmp_path):
    (tmp_path / "model.xml").write_text("<net/>")
    out = cli("bench", str(tmp_path), "--emulate", "aarch64")
    assert out.returncode == 2 and "nothing to emulate" in out.stderr


# -- end to end: real artifacts, real aarch64 runtimes under qemu ------------------------------


@pytest.fixture(scope="module")
def aarch64_root():
    missing = [p for p in (emulate.QEMU, "debootstrap") if emulate.find_program(p) is None]
    if missing:
        pytest.skip(f"needs {' and '.join(missing)} (apt-get install qemu-user-static debootstrap)")
    try:
        return emulate.prepare_root(print)
    except EdgekitError as exc:
        pytest.skip(f"cannot build the aarch64 root: {exc}")


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")
    pytest.importorskip("ai_edge_litert", reason="needs the 'tflite' extra")
    from edgekit.convert import convert

    # rpi4's four artifacts (tflite fp32 / int8 with int8 I/O, ORT fp32 / U8S8 int8), small model
    out = tmp_path_factory.mktemp("emulate") / "rpi4"
    convert("rpi4", "mobilenet_v2", width=0.35, resolution=96, out=out, calib_size=4, check=False, weights="random",
            backend=["tflite", "onnxruntime"])  # the .pte programs are not emulated (executorch_backend.py)
    return out


@pytest.mark.slow
def test_emulated_aarch64_outputs_match_x86(aarch64_root, build, tmp_path):
    out = cli("bench", str(build), "--emulate", "aarch64", "--json", str(tmp_path / "e.json"))
    assert out.returncode == 0, out.stderr
    assert "output match" in out.stdout and "EMULATED: no timings" in out.stdout
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["emulated"] is True and len(data["images"]) == emulate.DEFAULT_IMAGES
    assert data["cpu"] == "cortex-a72"  # the Pi 4's core, from the manifest's target
    rows = {Path(a["artifact"]).name: a for a in data["artifacts"]}
    assert set(rows) == {"model_fp32.tflite", "model_int8.tflite", "model_fp32.onnx", "model_int8.onnx"}
    for name, row in rows.items():
        assert row["ok"] and row["error"] is None, (name, row)
        assert row["aarch64_host"]["machine"] == "aarch64"
        assert row["aarch64_runtime"]["version"] == row["x86_runtime"]["version"]
    for name in ("model_fp32.tflite", "model_fp32.onnx"):
        assert rows[name]["match"]["top1_agreement"] == 1.0
    assert rows["model_int8.tflite"]["output_dtype"] == "int8"
    assert rows["model_int8.tflite"]["match"]["max_steps"] is not None
    assert rows["model_int8.onnx"]["match"]["max_steps"] is not None  # the QDQ output's scale
    assert rows["model_fp32.tflite"]["aarch64_runtime"]["details"]["xnnpack"]


@pytest.mark.slow
def test_emulate_single_artifact(aarch64_root, build):
    report = emulate.emulate(build / "model_int8.tflite", n_images=2)
    [m] = report.matches
    assert m.ok and m.match["n_images"] == 2 and report.preprocessing == "the manifest's preprocessing"
