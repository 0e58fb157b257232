"""`edgekit bench --device` against a real OpenSSH server on 127.0.0.1 (no SSH mocks).

The "device" is this machine: sshd runs with a temporary host key and user key, and the device's
python is this venv's (it has numpy + onnxruntime). HOME is pointed at a temp dir so the tests
never read or write the real ~/.ssh or ~/.config/edgekit.
"""
from __future__ import annotations

import dataclasses
import getpass
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

pytest.importorskip("paramiko", reason="needs the 'remote' extra (paramiko)")
pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")

from edgekit.bench.remote import bench_remote, load_inventory, resolve_devices  # noqa: E402
from edgekit.convert import convert  # noqa: E402
from edgekit.errors import InputError  # noqa: E402

SSHD = Path("/usr/sbin/sshd")
VENV_PYTHON = os.path.abspath(sys.executable)  # not resolved: the venv's python, with its packages


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgekit-test", "-f", str(path)],
                   check=True, capture_output=True)
    return path


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real sshd on 127.0.0.1:<free port>; yields (port, user key, host public key line)."""
    if not SSHD.is_file():
        pytest.skip(f"needs OpenSSH server at {SSHD} (Debian: apt-get install openssh-server; "
                    "`make test` installs it when run as root)")
    if not shutil.which("ssh-keygen"):
        pytest.skip("needs ssh-keygen (Debian: openssh-client)")
    tmp = tmp_path_factory.mktemp("sshd")
    host_key = _keygen(tmp / "host_ed25519")
    user_key = _keygen(tmp / "user_ed25519")
    (tmp / "authorized_keys").write_text(user_key.with_suffix(".pub").read_text())
    port = _free_port()
    config = tmp / "sshd_config"
    config.write_text("\n".join([
        "ListenAddress 127.0.0.1", f"Port {port}", f"HostKey {host_key}",
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}", f"PidFile {tmp / 'sshd.pid'}",
        f"AllowUsers {getpass.getuser()}", "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "StrictModes no", "UsePAM no", "Subsystem sftp internal-sftp", ""]))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    log = open(tmp / "sshd.log", "w")
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited with {proc.returncode}: {(tmp / 'sshd.log').read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"sshd did not listen on {port}: {(tmp / 'sshd.log').read_text()[-2000:]}")
            time.sleep(0.05)
    host_line = " ".join(host_key.with_suffix(".pub").read_text().split()[:2])
    yield {"port": port, "key": user_key, "host_line": f"[127.0.0.1]:{port} {host_line}", "dir": tmp}
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture
def home(tmp_path, monkeypatch, sshd):
    """A fake HOME whose ~/.ssh/known_hosts trusts the test server; no ssh-agent."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "known_hosts").write_text(sshd["host_line"] + "\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


def _fp32_artifact(tmp: Path, backend: str) -> Path:
    """A tiny MobileNetV3-Small (0.35 at 64 px) fp32 artifact built by ``backend``."""
    target = tmp / "target.yaml"
    target.write_text(yaml.safe_dump({
        "name": "tiny", "description": "d", "cpu": {"arch": "x86_64", "cores": 2},
        "builds": [{"backend": backend, "precisions": ["fp32"], "why": "test"}]}))
    manifest = convert(str(target), "mobilenet_v3_small", width=0.35, resolution=64, out=tmp / "out",
                       calib_size=2, weights="random")
    return tmp / "out" / manifest.artifacts[0].path


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    return _fp32_artifact(tmp_path_factory.mktemp("remote"), "onnxruntime")


def inventory(path: Path, sshd, **devices) -> Path:
    """devices.yaml with one entry per keyword: name=dict of overrides."""
    base = {"host": "127.0.0.1", "user": getpass.getuser(), "port": sshd["port"],
            "key": str(sshd["key"]), "python": VENV_PYTHON}
    path.write_text(yaml.safe_dump({"devices": {n: {**base, **o} for n, o in devices.items()}}))
    return path


def run(model, devices, **kw):
    return bench_remote(model, devices, threads=[1], iterations=5, warmup=1, **kw)


def test_remote_bench_returns_numbers_and_cleans_up(home, sshd, onnx_model, tmp_path):
    devices = resolve_devices(["pi"], inventory(tmp_path / "devices.yaml", sshd, pi={}))
    outcome = run(onnx_model, devices)
    assert outcome.failures == []
    [r] = outcome.results
    assert r.device == "pi" and r.threads == 1 and r.n == 5
    assert r.runtime["name"] == "onnxruntime" and r.backend == "onnxruntime" and r.precision == "fp32"
    lat = r.latency_ms
    assert 0 < lat["min"] <= lat["p50"] <= lat["max"] < 5000 and r.throughput_fps > 0
    assert r.load_ms > 0 and r.size_bytes == onnx_model.stat().st_size
    remote_dir = Path(r.extra["remote_dir"])
    assert remote_dir.name.startswith("edgekit.") and not remote_dir.exists()


def test_ov_precision_on_a_device_warns_for_other_artifacts(home, sshd, onnx_model, tmp_path):
    devices = resolve_devices(["pi"], inventory(tmp_path / "devices.yaml", sshd, pi={}))
    said = []
    outcome = run(onnx_model, devices, ov_precision="f16", progress=said.append)
    assert outcome.failures == [] and len(outcome.results) == 1
    assert any("--ov-precision applies only to OpenVINO artifacts" in s and onnx_model.name in s for s in said)


def test_user_at_host_spec_with_key_option(home, sshd, onnx_model):
    spec = f"{getpass.getuser()}@127.0.0.1:{sshd['port']}"
    [device] = resolve_devices([spec], key=sshd["key"])
    assert device.python == "python3" and device.port == sshd["port"]
    # the device's python3 may lack onnxruntime; point it at the venv for this run
    device = dataclasses.replace(device, python=VENV_PYTHON)
    outcome = run(onnx_model, [device])
    assert outcome.failures == [] and outcome.results[0].device == spec


def test_hostile_file_name_is_quoted(home, sshd, onnx_model, tmp_path):
    marker = f"edgekit-injected-{uuid.uuid4().hex[:8]}"
    real_home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    name = f"m \"q\" $(touch {marker}); cd; touch {marker}; 'x.onnx"
    hostile = tmp_path / name
    shutil.copy(onnx_model, hostile)
    devices = resolve_devices(["pi"], inventory(tmp_path / "devices.yaml", sshd, pi={}))
    try:
        outcome = run(hostile, devices)
        assert outcome.failures == []
        [r] = outcome.results
        assert r.extra["remote_artifact"] == f"{r.extra['remote_dir']}/{name}"
        assert not Path(r.extra["remote_dir"]).exists()
        assert not (real_home / marker).exists() and not Path(marker).exists()
    finally:
        (real_home / marker).unlink(missing_ok=True)
        Path(marker).unlink(missing_ok=True)


def test_unknown_host_key_then_trust_new_host(home, sshd, onnx_model, tmp_path):
    (home / ".ssh" / "known_hosts").write_text("")
    devices = resolve_devices(["pi"], inventory(tmp_path / "devices.yaml", sshd, pi={}))
    outcome = run(onnx_model, devices)
    assert outcome.results == []
    [failure] = outcome.failures
    assert "device 'pi'" in failure.message and "unknown host key" in failure.message
    assert f"ssh-keyscan -p {sshd['port']} 127.0.0.1" in failure.message
    assert "--trust-new-host" in failure.message and "\n" not in failure.message
    assert failure.exit_code == 2

    notes = []
    outcome = run(onnx_model, devices, trust_new_host=True, progress=notes.append)
    assert outcome.failures == [] and len(outcome.results) == 1
    assert any("trusted new host key" in n and "SHA256:" in n for n in notes)
    saved = home / ".config" / "edgekit" / "known_hosts"
    assert f"[127.0.0.1]:{sshd['port']}" in saved.read_text()
    assert (saved.stat().st_mode & 0o777) == 0o600
    outcome = run(onnx_model, devices)  # now trusted without the flag
    assert outcome.failures == [] and len(outcome.results) == 1


def test_refused_key(home, sshd, onnx_model, tmp_path):
    other = _keygen(tmp_path / "other_key")
    devices = resolve_devices(["pi"], inventory(tmp_path / "devices.yaml", sshd, pi={"key": str(other)}))
    [failure] = run(onnx_model, devices).failures
    assert "device 'pi'" in failure.message and "key authentication refused" in failure.message
    assert str(other) in failure.message and "\n" not in failure.message


def test_unreachable_host_fails_fast(home, sshd, onnx_model, tmp_path):
    closed = _free_port()
    devices = resolve_devices(["gone"], inventory(tmp_path / "devices.yaml", sshd, gone={"port": closed}))
    t0 = time.monotonic()
    [failure] = run(onnx_model, devices).failures
    assert time.monotonic() - t0 < 5
    assert "device 'gone'" in failure.message and f"cannot reach 127.0.0.1:{closed}" in failure.message
    assert "refused" in failure.message.lower()


def test_missing_runtime_names_what_to_install(home, sshd, onnx_model, tmp_path):
    bare = tmp_path / "bare"  # a python without numpy / onnxruntime
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    devices = resolve_devices(["pi"], inventory(tmp_path / "devices.yaml", sshd,
                                                pi={"python": str(bare / "bin" / "python")}))
    outcome = run(onnx_model, devices)
    [failure] = outcome.failures
    assert "device 'pi'" in failure.message and "install one of onnxruntime" in failure.message
    assert failure.exit_code == 3 and "\n" not in failure.message


def test_two_devices_concurrently_and_one_failing(home, sshd, onnx_model, tmp_path):
    inv = inventory(tmp_path / "devices.yaml", sshd, a={}, b={}, down={"port": _free_port()})
    outcome = run(onnx_model, resolve_devices(["a,b", "down"], inv))
    assert sorted(r.device for r in outcome.results) == ["a", "b"]
    assert [f.device for f in outcome.failures] == ["down"]
    dirs = {r.extra["remote_dir"] for r in outcome.results}
    assert len(dirs) == 2 and not any(Path(d).exists() for d in dirs)


def test_inventory_validation(tmp_path, sshd):
    bad = tmp_path / "devices.yaml"
    bad.write_text(yaml.safe_dump({"devices": {"pi": {"host": "h", "usr": "pi"}}}))
    with pytest.raises(InputError, match=r"devices.pi: unknown key 'usr' \(did you mean 'user'\?\)"):
        load_inventory(bad)
    bad.write_text(yaml.safe_dump({"device": {}}))
    with pytest.raises(InputError, match="did you mean 'devices'"):
        load_inventory(bad)
    good = inventory(tmp_path / "good.yaml", sshd, pi={}, jetson={})
    with pytest.raises(InputError, match="unknown device 'pj'"):
        resolve_devices(["pj"], good)
    with pytest.raises(InputError, match="expected user@host"):
        resolve_devices(["me@host:notaport"], good)
    [d] = resolve_devices(["me@[::1]:2200"], good)
    assert (d.host, d.port, d.user) == ("::1", 2200, "me")


def cli(*args, home, cwd):
    env = {**os.environ, "HOME": str(home)}
    env.pop("SSH_AUTH_SOCK", None)
    return subprocess.run([sys.executable, "-m", "edgekit.cli.main", *args], capture_output=True,
                          text=True, timeout=120, env=env, cwd=cwd)


def test_cli_device_rows_and_failure_exit_code(home, sshd, onnx_model, tmp_path):
    inv = inventory(tmp_path / "inv.yaml", sshd, pi={}, zero={}, down={"port": _free_port()})
    out = cli("bench", str(onnx_model), "-n", "5", "--warmup", "1", "--threads", "1",
              "--device", "pi,zero", "--devices", str(inv), "--json", str(tmp_path / "r.json"),
              home=home, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    table_rows = [line for line in out.stdout.splitlines() if line.startswith("│") and ".onnx" in line]
    assert len(table_rows) == 2 and "device" in out.stdout  # the device column, one row per device
    assert {row.split()[1] for row in table_rows} == {"pi", "zero"}
    rows = yaml.safe_load((tmp_path / "r.json").read_text())
    assert sorted(r["device"] for r in rows) == ["pi", "zero"]

    out = cli("bench", str(onnx_model), "-n", "5", "--warmup", "1", "--device", "pi",
              "--device", "down", home=home, cwd=tmp_path)  # ./devices.yaml is not there: --devices
    assert out.returncode == 2 and "no inventory names it" in out.stderr

    shutil.copy(inv, tmp_path / "devices.yaml")  # the default inventory in the working dir
    out = cli("bench", str(onnx_model), "-n", "5", "--warmup", "1", "--device", "pi",
              "--device", "down", home=home, cwd=tmp_path)
    assert out.returncode == 1
    assert "model_fp32.onnx" in out.stdout  # pi's row still reported
    assert "error: device 'down'" in out.stderr and "Traceback" not in out.stderr


NO_SCHEMA = '''import sys


class NoSchema:  # a runtime with an interpreter but no flatbuffer schema, as tflite-runtime
    def find_spec(self, name, path=None, target=None):
        if name == "ai_edge_litert.schema_py_generated":
            raise ImportError("no schema on this device")


sys.meta_path.insert(0, NoSchema())
'''


@pytest.fixture(scope="module")
def tflite_model(tmp_path_factory):
    pytest.importorskip("litert_torch", reason="needs the 'tflite' extra")
    return _fp32_artifact(tmp_path_factory.mktemp("remote_tflite"), "tflite")


def test_tflite_per_op_on_a_device_without_the_schema(home, sshd, tflite_model, tmp_path):
    """The device's runtime cannot split the model (no schema, as tflite-runtime on Raspberry Pi
    OS): edgekit splits it here, copies the one-op models over and the device times them."""
    from edgekit.bench.runner import split_ops

    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(NO_SCHEMA)
    alone = subprocess.run([VENV_PYTHON, "-m", "edgekit.bench.runner", json.dumps(
        {"artifact": str(tflite_model), "threads": 1, "iterations": 2, "per_op": True})],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(blocker)})
    result = json.loads(alone.stdout)
    assert result["per_op"] is None and "pip install ai-edge-litert" in result["per_op_note"]

    python = f"env PYTHONPATH={blocker} {VENV_PYTHON}"
    devices = resolve_devices(["pi"], inventory(tmp_path / "devices.yaml", sshd, pi={"python": python}))
    outcome = bench_remote(tflite_model, devices, threads=[1], iterations=2, warmup=1, per_op=True)
    assert outcome.failures == []
    [r] = outcome.results
    ops, _ = split_ops(str(tflite_model))
    assert [(op["name"], op["type"]) for op in r.per_op] == [(op["name"], op["type"]) for op in ops]
    assert all(op["time_us"] > 0 for op in r.per_op) and "timed alone" in r.per_op_note
    assert not Path(r.extra["remote_dir"]).exists()  # the one-op models went with the rest


def test_device_runner_refuses_more_threads_than_its_cores_take(home, sshd, onnx_model, tmp_path):
    """The device checks --threads against its own cores before creating an interpreter (not run
    on the code before the fix: it would start 100000 threads)."""
    devices = resolve_devices(["pi"], inventory(tmp_path / "devices.yaml", sshd, pi={}))
    outcome = bench_remote(onnx_model, devices, threads=[100000], iterations=5, warmup=1)
    assert outcome.results == []
    [failure] = outcome.failures
    assert failure.exit_code == 2 and "threads 100000 is not in 1.." in failure.message
    assert failure.message.startswith("device 'pi'")


def test_paired_comparison_on_a_device(home, sshd, onnx_model, tmp_path):
    """The device's runner alternates the two; same-named files of two folders do not collide."""
    from edgekit.bench.paired import bench_paired_device

    twin = tmp_path / "other" / onnx_model.name
    twin.parent.mkdir()
    twin.write_bytes(onnx_model.read_bytes())
    [device] = resolve_devices(["pi"], inventory(tmp_path / "devices.yaml", sshd, pi={}))
    result = bench_paired_device([onnx_model, twin], device, threads=1, pairs=200, warmup=5)
    assert result.device == "pi" and [t.n for t in result.timings] == [200, 200]
    (ratio,) = result.ratios
    assert 0.5 < ratio.ratio < 2.0 and ratio.low <= ratio.ratio <= ratio.high
