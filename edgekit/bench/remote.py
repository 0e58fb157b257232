"""Benchmarks on a device over SSH: copy the artifact and runner.py there, run it, bring the JSON back.

Devices are `user@host[:port]` or names from a devices.yaml inventory:

    devices:
      pi:
        host: 192.168.1.20
        user: pi
        port: 22                 # optional
        key: ~/.ssh/id_ed25519   # optional: else --key, else your default keys / ssh-agent
        target: rpi4             # optional: what the device is (a note when artifacts differ)
        python: python3          # optional: the interpreter with numpy + a runtime

Key authentication only, host keys checked against ~/.ssh/known_hosts and edgekit's own
~/.config/edgekit/known_hosts (where --trust-new-host saves keys). Every remote command is
built from shell-quoted words; files travel by SFTP, so file names never reach a shell unquoted.
"""
from __future__ import annotations

import dataclasses
import getpass
import json
import logging
import posixpath
import re
import shlex
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..backends.base import backend_for_path
from ..errors import EdgekitError, InputError, MissingDependencyError, first_line, suggest, unknown
from ..manifest import MANIFEST_NAME, Manifest
from ..targets import build_dataclass
from .local import RUNNER, BenchResult, BenchSettings, artifacts_in, result_from_runner, warn_ov_precision
from .runner import split_ops

INVENTORY_NAME = "devices.yaml"
CONNECT_TIMEOUT = 10.0  # seconds, for TCP connect, banner and authentication
COMMAND_TIMEOUT = 60.0  # mktemp / rm
RUN_TIMEOUT = 1800.0  # one runner invocation


class RemoteRuntimeMissing(EdgekitError):
    """The device lacks numpy or a runtime for the artifact (same code as a missing local extra)."""

    exit_code = 3


@dataclass(frozen=True)
class Device:
    """One device; the inventory entry's keys are exactly these fields except `name`."""

    host: str
    user: str | None = None
    port: int = 22
    key: str | None = None
    target: str | None = None
    python: str = "python3"
    name: str = ""

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}" + (f":{self.port}" if self.port != 22 else "")

    @property
    def label(self) -> str:
        """How messages name the device: `device 'pi' (pi@10.0.0.5)`."""
        return f"device '{self.name}'" + (f" ({self.address})" if self.name != self.address else "")


@dataclass
class DeviceFailure:
    device: str
    message: str
    exit_code: int = 1


@dataclass
class RemoteOutcome:
    results: list[BenchResult] = field(default_factory=list)
    failures: list[DeviceFailure] = field(default_factory=list)


def config_dir() -> Path:
    return Path.home() / ".config" / "edgekit"


def default_inventory() -> Path | None:
    for candidate in (Path(INVENTORY_NAME), config_dir() / INVENTORY_NAME):
        if candidate.is_file():
            return candidate
    return None


def load_inventory(path: str | Path | None = None) -> dict[str, Device]:
    """Devices by name from `path`, or from ./devices.yaml, then ~/.config/edgekit/devices.yaml."""
    if path is None:
        path = default_inventory()
        if path is None:
            return {}
    path = Path(path)
    if not path.is_file():
        raise InputError(f"device inventory not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: invalid YAML: {first_line(exc)}") from None
    return parse_inventory(data, str(path), base=path.parent)


def parse_inventory(data, source: str = "<memory>", base: Path | None = None) -> dict[str, Device]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a mapping with a 'devices' key")
    for key in data:
        if key != "devices":
            raise InputError(f"{source}: unknown key '{key}'{suggest(str(key), ['devices'])}")
    entries = data.get("devices") or {}
    if not isinstance(entries, dict):
        raise InputError(f"{source}: 'devices' must map names to devices")
    devices = {}
    for name, entry in entries.items():
        where = f"{source}: devices.{name}"
        if isinstance(entry, dict) and "name" in entry:
            raise InputError(f"{where}: unknown key 'name' (the device's name is its key)")
        device = build_dataclass(Device, entry, where)
        if not isinstance(device.host, str) or not device.host:
            raise InputError(f"{where}: 'host' must be a host name or address")
        if not isinstance(device.port, int) or not 0 < device.port < 65536:
            raise InputError(f"{where}: 'port' must be 1..65535, got {device.port!r}")
        if not _valid_python(device.python):
            raise InputError(f"{where}: 'python' must name the device's interpreter, "
                             f"got {device.python!r}")
        key = device.key
        if key is not None:
            key = Path(str(key)).expanduser()
            key = str(key if key.is_absolute() or base is None else (base / key).absolute())
        devices[str(name)] = dataclasses.replace(
            device, name=str(name), key=key, user=str(device.user) if device.user else None)
    return devices


def _valid_python(python) -> bool:
    try:
        return isinstance(python, str) and bool(shlex.split(python))
    except ValueError:  # unbalanced quotes
        return False


_SPEC = re.compile(r"^(?P<user>[^@\s]+)@(?P<host>\[[^\]]+\]|[^:@\s\[\]]+)(?::(?P<port>\d+))?$")


def parse_device(spec: str, inventory: dict[str, Device], inventory_path: Path | None = None) -> Device:
    """`user@host[:port]` (IPv6 as `user@[::1]:22`) or a name from the inventory."""
    spec = spec.strip()
    if "@" not in spec:
        if spec in inventory:
            return inventory[spec]
        if not inventory:
            where = inventory_path or f"./{INVENTORY_NAME} or {config_dir() / INVENTORY_NAME}"
            raise InputError(f"device '{spec}' is not user@host[:port] and no inventory names it "
                             f"(looked in {where})")
        raise unknown("device", spec, inventory)
    match = _SPEC.match(spec)
    if not match:
        raise InputError(f"bad device '{spec}': expected user@host[:port] or a name from {INVENTORY_NAME}")
    port = int(match["port"] or 22)
    if not 0 < port < 65536:
        raise InputError(f"bad device '{spec}': port must be 1..65535")
    return Device(host=match["host"].strip("[]"), user=match["user"], port=port, name=spec)


def resolve_devices(specs: Iterable[str], inventory_path: str | Path | None = None,
                    key: str | Path | None = None) -> list[Device]:
    """Devices for repeated / comma-separated --device values; `key` fills in for devices
    that name none. Duplicates are dropped."""
    inventory = load_inventory(inventory_path)
    names = [s.strip() for spec in specs for s in spec.split(",") if s.strip()]
    if not names:
        raise InputError("no device given")
    devices: dict[str, Device] = {}
    for spec in names:
        device = parse_device(spec, inventory, Path(inventory_path) if inventory_path else None)
        if device.user is None:
            device = dataclasses.replace(device, user=getpass.getuser())
        if device.key is None and key is not None:
            device = dataclasses.replace(device, key=str(Path(key).expanduser()))
        devices.setdefault(device.name, device)
    return list(devices.values())


# --- SSH ----------------------------------------------------------------------------------------

def require_paramiko():
    try:
        import paramiko
    except ImportError:
        raise MissingDependencyError("paramiko", "remote") from None
    # paramiko logs transport failures with tracebacks; we raise one-line errors instead.
    logging.getLogger("paramiko").addHandler(logging.NullHandler())
    logging.getLogger("paramiko").propagate = False
    return paramiko


_KNOWN_HOSTS_LOCK = threading.Lock()


class _UnknownHostKey(Exception):
    def __init__(self, key):
        super().__init__("unknown host key")
        self.key = key


def _known_host_name(device: Device) -> str:
    return device.host if device.port == 22 else f"[{device.host}]:{device.port}"


def _policies(paramiko, known_hosts: Path):
    class Reject(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):
            raise _UnknownHostKey(key)

    class TrustAndSave(paramiko.AutoAddPolicy):
        """AutoAddPolicy, but saves to edgekit's known_hosts by re-reading it under a lock, so
        concurrent devices don't overwrite each other's newly trusted keys."""

        def missing_host_key(self, client, hostname, key):
            client.get_host_keys().add(hostname, key.get_name(), key)
            client.edgekit_trusted = f"{hostname} {key.get_name()} {key.fingerprint}"
            with _KNOWN_HOSTS_LOCK:
                known_hosts.parent.mkdir(parents=True, exist_ok=True)
                keys = paramiko.HostKeys(str(known_hosts) if known_hosts.is_file() else None)
                keys.add(hostname, key.get_name(), key)
                keys.save(str(known_hosts))
                known_hosts.chmod(0o600)

    return Reject(), TrustAndSave()


def connect(device: Device, trust_new_host: bool = False, timeout: float = CONNECT_TIMEOUT):
    """An authenticated paramiko.SSHClient, or a one-line error naming the device."""
    paramiko = require_paramiko()
    label = device.label
    known_hosts = config_dir() / "known_hosts"
    client = paramiko.SSHClient()
    for path, load in ((Path.home() / ".ssh" / "known_hosts", client.load_system_host_keys),
                       (known_hosts, client.load_host_keys)):
        try:
            if path.is_file():
                load(str(path))
        except paramiko.hostkeys.InvalidHostKey as exc:
            raise InputError(f"{path}: unreadable line: {exc.line.strip()[:80]}") from None
    reject, trust = _policies(paramiko, known_hosts)
    client.set_missing_host_key_policy(trust if trust_new_host else reject)
    if device.key and not Path(device.key).is_file():
        raise InputError(f"{label}: key file not found: {device.key}")
    try:
        client.connect(device.host, port=device.port, username=device.user,
                       key_filename=device.key, allow_agent=device.key is None,
                       look_for_keys=device.key is None, timeout=timeout, banner_timeout=timeout,
                       auth_timeout=timeout)
        return client
    except _UnknownHostKey as exc:
        client.close()
        port = f"-p {device.port} " if device.port != 22 else ""
        raise InputError(
            f"{label}: unknown host key ({exc.key.get_name()} {exc.key.fingerprint}); if that is "
            f"the device's key, trust it with: ssh-keyscan {port}{shlex.quote(device.host)} >> "
            "~/.ssh/known_hosts, or rerun with --trust-new-host") from None
    except paramiko.BadHostKeyException:
        client.close()
        raise InputError(
            f"{label}: host key CHANGED since it was trusted (reinstalled device or an attack); "
            f"if expected, remove the old key with: ssh-keygen -R {shlex.quote(_known_host_name(device))}"
            f" (and from {known_hosts} if there)") from None
    except paramiko.PasswordRequiredException:
        client.close()
        raise InputError(f"{label}: key {device.key} is passphrase-protected; add it to ssh-agent "
                         "(ssh-add) and leave out --key / key:") from None
    except paramiko.AuthenticationException:
        client.close()
        tried = f"key {device.key}" if device.key else "your default keys and ssh-agent"
        raise InputError(f"{label}: key authentication refused for user '{device.user}' (tried "
                         f"{tried}); add the public key to ~/.ssh/authorized_keys on the device "
                         "(ssh-copy-id) or give --key / key:") from None
    except (socket.timeout, TimeoutError):
        client.close()
        raise EdgekitError(f"{label}: connection timed out after {timeout:g} s") from None
    except paramiko.SSHException as exc:
        client.close()
        if "banner" in str(exc):
            raise EdgekitError(f"{label}: no SSH server answered on {device.host}:{device.port} "
                               f"({first_line(exc)})") from None
        raise EdgekitError(f"{label}: SSH failed: {first_line(exc)}") from None
    except OSError as exc:  # refused, unreachable, unknown host name
        client.close()
        causes = getattr(exc, "errors", None)  # NoValidConnectionsError: one per address tried
        first = next(iter(causes.values())) if causes else exc
        reason = first.strerror or first_line(first)
        raise EdgekitError(f"{label}: cannot reach {device.host}:{device.port}: {reason}") from None


def run_command(client, words: list[str], timeout: float) -> tuple[int, str, str]:
    """Run one command built from shell-quoted `words`; (exit status, stdout, stderr)."""
    channel = client.get_transport().open_session(timeout=CONNECT_TIMEOUT)
    try:
        channel.exec_command(" ".join(words))
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        while True:  # drain both streams, so a chatty stderr can't stall the remote process
            if channel.recv_ready():
                out += channel.recv(65536)
            elif channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
            elif channel.exit_status_ready():
                break
            elif time.monotonic() > deadline:
                raise EdgekitError(f"remote command timed out after {timeout:g} s: {words[0]}")
            else:
                time.sleep(0.005)
        return (channel.recv_exit_status(), out.decode(errors="replace"),
                err.decode(errors="replace"))
    finally:
        channel.close()


def _interpreter(python: str) -> list[str]:
    """The inventory's `python` (may carry arguments, e.g. `/opt/venv/bin/python -X utf8`), quoted."""
    return [shlex.quote(w) for w in shlex.split(python)]


class RemoteSession:
    """A connection plus a private temp dir on the device; the dir is removed on close."""

    def __init__(self, device: Device, trust_new_host: bool = False):
        self.device = device
        self.label = device.label
        self.client = connect(device, trust_new_host)
        self.dir: str | None = None
        self.sftp = None
        try:
            status, out, err = run_command(
                self.client, ["mktemp", "-d", '"${TMPDIR:-/tmp}/edgekit.XXXXXX"'], COMMAND_TIMEOUT)
            path = out.strip()
            if status != 0 or not path.startswith("/") or "\n" in path:
                detail = (err.strip() or out.strip() or f"exit status {status}").splitlines()[0]
                raise EdgekitError(f"{self.label}: cannot create a temp dir: {detail}")
            self.dir = path
            self.sftp = self.client.open_sftp()
            self.put(RUNNER)
        except BaseException:
            self.close()
            raise

    def put(self, local: Path) -> str:
        remote = posixpath.join(self.dir, local.name)
        try:
            self.sftp.put(str(local), remote)
        except OSError as exc:
            raise EdgekitError(f"{self.label}: copying {local.name} failed: {first_line(exc)}") from None
        return remote

    def run_runner(self, config: dict, timeout: float = RUN_TIMEOUT) -> dict:
        words = ["cd", shlex.quote(self.dir), "&&", *_interpreter(self.device.python), "runner.py",
                 shlex.quote(json.dumps(config))]
        status, out, err = run_command(self.client, words, timeout)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            if status == 127:
                raise EdgekitError(f"{self.label}: '{self.device.python}' not found on the device; "
                                   "set python: in devices.yaml")
            tail = (err.strip().splitlines() or [f"exit status {status}, no output"])[-1]
            raise EdgekitError(f"{self.label}: runner failed: {tail}")
        data = json.loads(lines[-1])
        if "error" in data:
            if data.get("kind") == "missing_runtime":
                raise RemoteRuntimeMissing(f"{self.label}: {data['error']} there "
                                           f"(for {self.device.python})")
            if data.get("kind") in ("invalid_model", "bad_input"):  # e.g. more threads than it takes
                raise InputError(f"{self.label}: {data['error']}")
            if "No module named 'numpy'" in data["error"]:
                raise RemoteRuntimeMissing(f"{self.label}: numpy is missing: install numpy there "
                                           f"(for {self.device.python})")
            raise EdgekitError(f"{self.label}: benchmark of {posixpath.basename(config['artifact'])} "
                               f"failed: {data['error']}")
        return data

    def close(self) -> None:
        try:
            if self.sftp is not None:
                self.sftp.close()
            if self.dir:
                run_command(self.client, ["rm", "-rf", "--", shlex.quote(self.dir)], COMMAND_TIMEOUT)
        except Exception as exc:  # the run's result matters more; say what was left behind
            logging.getLogger(__name__).warning("%s: could not remove %s: %s", self.label, self.dir,
                                                first_line(exc))
        finally:
            self.client.close()


def sidecars(artifact: Path) -> list[Path]:
    """Files the runtime needs beside the artifact (OpenVINO's weights)."""
    return [artifact.with_suffix(suffix) for suffix in backend_for_path(artifact).sidecars]


def _put_op_models(session: RemoteSession, artifact: Path) -> dict | None:
    """Split a .tflite into one-op models here and copy them over: tflite-runtime, as on Raspberry
    Pi OS, has no flatbuffer schema to split with, only the interpreter to time them."""
    try:
        ops, weight_ops = split_ops(str(artifact))
    except Exception:  # no ai-edge-litert here, or unsplittable: the device's runner says why
        return None
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, op in enumerate(ops):
            local = Path(tmp) / f"{artifact.stem}.op{i:04d}.tflite"
            local.write_bytes(op["content"])
            entries.append({"file": session.put(local), "name": op["name"], "type": op["type"]})
    return {"ops": entries, "weight_ops": weight_ops}


def bench_device(device: Device, artifacts: list[tuple[Path, str, str, dict | None]],
                 settings: list[BenchSettings], trust_new_host: bool = False,
                 progress: Callable[[str], None] | None = None) -> RemoteOutcome:
    """Every artifact x settings on one device over one connection. A connection failure fails the
    device; a runner failure fails only that artifact."""
    say = progress or (lambda _m: None)
    outcome = RemoteOutcome()
    try:
        session = RemoteSession(device, trust_new_host)
    except EdgekitError as exc:
        outcome.failures.append(DeviceFailure(device.name, str(exc), exc.exit_code))
        return outcome
    if getattr(session.client, "edgekit_trusted", None):
        say(f"{device.name}: trusted new host key {session.client.edgekit_trusted} "
            f"(saved to {config_dir() / 'known_hosts'})")
    try:
        for artifact, backend, precision, parity in artifacts:
            try:
                for extra in sidecars(artifact):
                    if extra.is_file():
                        session.put(extra)
                remote = session.put(artifact)
                per_op = artifact.suffix == ".tflite" and any(s.per_op for s in settings)
                op_models = _put_op_models(session, artifact) if per_op else None
                for s in settings:
                    say(f"{device.name}: {artifact.name} ({backend} {precision}), "
                        f"threads {s.threads or 'default'}")
                    config = s.runner_config(remote)
                    if s.per_op and op_models:
                        config["op_models"] = op_models
                    data = session.run_runner(config)
                    result = result_from_runner(data, artifact, backend, precision, parity, device=device.name)
                    result.extra.update(remote_dir=session.dir, remote_artifact=data["artifact"],
                                        address=device.address)
                    outcome.results.append(result)
            except EdgekitError as exc:
                outcome.failures.append(DeviceFailure(device.name, str(exc), exc.exit_code))
                if not session.client.get_transport() or not session.client.get_transport().is_active():
                    break
    finally:
        session.close()
    return outcome


def bench_remote(path: str | Path, devices: list[Device], threads: list[int | None] | None = None,
                 warmup: int = 10, iterations: int | None = None, duration: float | None = None,
                 per_op: bool = False, ov_precision: str | None = None, trust_new_host: bool = False,
                 progress: Callable[[str], None] | None = None, verify: bool = True) -> RemoteOutcome:
    """Benchmark one artifact or a convert folder on several devices concurrently.
    Results come back in device order, then artifact, then thread count."""
    require_paramiko()
    say = progress or (lambda _m: None)
    artifacts = artifacts_in(Path(path), verify)
    if ov_precision:
        warn_ov_precision([a for a, *_ in artifacts], say)
    settings = [BenchSettings(t, warmup, iterations, duration, per_op, ov_precision)
                for t in threads or [None]]
    built_for = _manifest_target(Path(path))
    for d in devices:
        if d.target and built_for and d.target != built_for:
            say(f"note: {d.name} is a '{d.target}' device; these artifacts were built for '{built_for}'")
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(devices)))) as pool:
        outcomes = list(pool.map(lambda d: bench_device(d, artifacts, settings, trust_new_host, say),
                                 devices))
    total = RemoteOutcome()
    for o in outcomes:
        total.results += o.results
        total.failures += o.failures
    return total


def _manifest_target(path: Path) -> str | None:
    folder = path if path.is_dir() else path.parent
    if not (folder / MANIFEST_NAME).is_file():
        return None
    try:
        return Manifest.read(folder).target
    except InputError:
        return None
