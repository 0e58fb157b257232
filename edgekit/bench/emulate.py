"""`edgekit bench --emulate aarch64`: do the artifacts run on an aarch64 board, with the same outputs?

Without a board, the aarch64 runtime wheels (numpy, onnxruntime, ai-edge-litert from PyPI) run
the artifacts under qemu user-mode emulation, fed the same prepared real images as a run of the
same runner.py on this machine; the outputs are compared. Emulated timings mean nothing and are
not reported.

The aarch64 side is a Debian arm64 root, built once into a cache folder: debootstrap's first stage
(`--foreign --variant=minbase`) plus Python 3.11 unpacked with dpkg-deb. The second stage is not
run: it needs binfmt_misc, and unconfigured packages are enough to run Python. qemu-aarch64-static
-L ROOT resolves the guest's absolute paths inside ROOT when they exist there and on the host
otherwise, so the guest reads the artifacts, runner.py and inputs where they are. ORT and LiteRT
crash at import unless ROOT/proc/cpuinfo is an ARM-format file matching the emulated CPU.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from rich.table import Table

from ..backends.base import PRECISIONS, Backend, backends, get_backend
from ..errors import EdgekitError, ExternalToolError, InputError, MissingToolError, ParityError
from ..manifest import MANIFEST_NAME, Manifest, json_safe
from ..parity import Parity, Tolerance, compare as parity_compare
from ..preprocessing import Preprocessing
from ..targets import ParitySpec, TargetProfile, load_target
from .local import RUNNER, artifacts_in, run_runner

ARCHES = ("aarch64",)
ROOT_ENV = "EDGEKIT_AARCH64_ROOT"
MIRROR_ENV = "EDGEKIT_DEBIAN_MIRROR"
MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"  # Python 3.11, like the project; glibc 2.36 for the manylinux wheels
GUEST_PYTHON = "/usr/bin/python3.11"
GUEST_SITE = "/opt/edgekit/site"  # the aarch64 wheels, inside the root
READY = ".edgekit-root.json"  # written last: the root is complete (and which wheels it holds)
QEMU = "qemu-aarch64-static"
DEFAULT_IMAGES = 8
RUN_TIMEOUT = 3600.0  # one emulated runner invocation (MobileNetV2 fp32: ~4 s an image)

Say = Callable[[str], None]


@dataclass(frozen=True)
class Cpu:
    part: int
    variant: int
    revision: int
    features: str


# qemu -cpu name -> what /proc/cpuinfo says on that core (features as the Linux kernel lists them)
CPUS = {
    "cortex-a53": Cpu(0xD03, 0x0, 4, "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"),
    "cortex-a72": Cpu(0xD08, 0x0, 3, "fp asimd evtstrm crc32 cpuid"),
    "cortex-a76": Cpu(0xD0B, 0x4, 1, "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
                                     "asimdhp cpuid asimdrdm lrcpc dcpop asimddp"),
    "neoverse-n1": Cpu(0xD0C, 0x3, 1, "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
                                      "asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs"),
}
DEFAULT_CPU = "neoverse-n1"


# -- the aarch64 root -------------------------------------------------------------------------


def root_dir() -> Path:
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).expanduser().absolute()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return (cache / "edgekit" / "aarch64-root").absolute()


def read_ready(root: Path) -> dict | None:
    try:
        return json.loads((root / READY).read_text())
    except (OSError, ValueError):
        return None


def check_tools(building: bool) -> None:
    """A one-line MissingToolError naming the Debian packages when a needed program is absent."""
    needed = {QEMU: "qemu-user-static"}
    if building:
        needed.update({"debootstrap": "debootstrap", "dpkg-deb": "dpkg", "tar": "tar"})
    missing = [program for program in needed if find_program(program) is None]
    if missing:
        packages = " ".join(dict.fromkeys(needed[p] for p in missing))
        raise MissingToolError(f"--emulate aarch64 needs {', '.join(missing)}: install with "
                               f"'apt-get install {packages}' (Debian/Ubuntu, as root)")


def find_program(program: str) -> str | None:
    """On PATH, or in /usr/sbin (debootstrap's home, off a normal user's PATH)."""
    sbin = Path("/usr/sbin", program)
    return shutil.which(program) or (str(sbin) if sbin.is_file() else None)


def _program(name: str) -> str:
    return find_program(name) or name


def emulated_backends() -> list[Backend]:
    """The backends whose artifacts run under emulation: those with aarch64 runtime wheels."""
    return [b for b in backends() if b.aarch64_wheels]


def wanted_wheels() -> dict[str, str | None]:
    """The runtime versions this machine runs, so both sides run the same releases."""
    versions: dict[str, str | None] = {}
    for package in dict.fromkeys(("numpy", *(w for b in emulated_backends() for w in b.aarch64_wheels))):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def debootstrap_command(dest: Path, mirror: str = MIRROR) -> list[str]:
    return [_program("debootstrap"), "--foreign", "--arch=arm64", "--variant=minbase",
            "--include=python3.11", SUITE, str(dest), mirror]


def pip_command(site: Path, wheels: dict[str, str | None]) -> list[str]:
    # bookworm's glibc is 2.36: accept every manylinux tag up to it
    platforms = ["manylinux2014_aarch64"] + [f"manylinux_2_{v}_aarch64" for v in range(17, 37)]
    return [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-deps", "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
            *[arg for p in platforms for arg in ("--platform", p)], "--target", str(site),
            *[f"{name}=={version}" if version else name for name, version in wheels.items()]]


def qemu_command(root: Path, cpu: str) -> list[str]:
    """The runner under emulation; run_runner appends the JSON config."""
    return [_program(QEMU), "-cpu", cpu, "-L", str(root), str(root / GUEST_PYTHON.lstrip("/")),
            str(RUNNER)]


def guest_env() -> dict[str, str]:
    return {"PYTHONPATH": GUEST_SITE, "PYTHONNOUSERSITE": "1", "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8", "HOME": "/root"}


def cpuinfo_text(cpu: str, cores: int) -> str:
    c = CPUS[cpu]
    block = (f"BogoMIPS\t: 108.00\nFeatures\t: {c.features}\nCPU implementer\t: 0x41\n"
             f"CPU architecture: 8\nCPU variant\t: {c.variant:#x}\nCPU part\t: {c.part:#05x}\n"
             f"CPU revision\t: {c.revision}\n\n")
    return "".join(f"processor\t: {i}\n{block}" for i in range(max(1, cores)))


def write_cpuinfo(root: Path, cpu: str) -> None:
    proc = root / "proc"
    if proc.is_symlink():  # debootstrap links it to the host's /proc inside containers
        proc.unlink()
    proc.mkdir(exist_ok=True)
    text = cpuinfo_text(cpu, os.cpu_count() or 1)
    cpuinfo = proc / "cpuinfo"
    if not cpuinfo.is_file() or cpuinfo.read_text() != text:
        tmp = proc / f".cpuinfo.{os.getpid()}"
        tmp.write_text(text)
        os.replace(tmp, cpuinfo)


def prepare_root(say: Say) -> Path:
    """The cached aarch64 root with this machine's runtime versions, built or refreshed if needed."""
    root = root_dir()
    ready = read_ready(root)
    check_tools(building=ready is None)
    wheels = wanted_wheels()
    if ready is None:
        return _build_root(root, wheels, say)
    if ready.get("wheels") != wheels:
        say(f"aarch64 root {root}: installing runtime wheels {_versions(wheels)} (from PyPI)")
        _install_wheels(root, wheels)
        _write_ready(root, {**ready, "wheels": wheels})
    return root


def _build_root(root: Path, wheels: dict[str, str | None], say: Say) -> Path:
    if os.geteuid() != 0:
        raise ExternalToolError(f"building the aarch64 root runs debootstrap, which needs root: run "
                                f"this once as root, or set {ROOT_ENV} to a root built that way")
    mirror = os.environ.get(MIRROR_ENV, MIRROR)
    say(f"building the aarch64 root in {root} (once, about a minute): Debian {SUITE} arm64 "
        f"with Python 3.11 from {mirror}")
    started = time.monotonic()
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _run(debootstrap_command(tmp, mirror), "debootstrap",
             hint=f"it downloads from {mirror}; set {MIRROR_ENV} for another mirror")
        _unpack_base(tmp)
        say(f"aarch64 root: installing runtime wheels {_versions(wheels)} (from PyPI)")
        _install_wheels(tmp, wheels)
        write_cpuinfo(tmp, DEFAULT_CPU)
        seconds = round(time.monotonic() - started)
        _write_ready(tmp, {"suite": SUITE, "python": GUEST_PYTHON, "wheels": wheels,
                           "build_seconds": seconds})
        if root.exists():  # a half-built root from an interrupted older build
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"aarch64 root ready in {seconds} s")
    return root


def _unpack_base(root: Path) -> None:
    """Unpack what debootstrap's first stage only downloaded (python3.11 and its libraries),
    keeping the merged-/usr symlinks (/lib -> usr/lib) that dpkg-deb -x would replace."""
    debpaths = dict(line.split(maxsplit=1) for line in
                    (root / "debootstrap" / "debpaths").read_text().splitlines() if line.strip())
    for package in (root / "debootstrap" / "base").read_text().split():
        deb = root / debpaths[package].strip().lstrip("/")
        with subprocess.Popen([_program("dpkg-deb"), "--fsys-tarfile", str(deb)],
                              stdout=subprocess.PIPE) as unpack:
            _run([_program("tar"), "-x", "--keep-directory-symlink", "-C", str(root)],
                 f"unpacking {package}", stdin=unpack.stdout)
        if unpack.returncode:
            raise ExternalToolError(f"dpkg-deb could not read {deb.name}")
    for deb in (root / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        deb.unlink()


def _install_wheels(root: Path, wheels: dict[str, str | None]) -> None:
    site = root / GUEST_SITE.lstrip("/")
    fresh = site.with_name(site.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    _run(pip_command(fresh, wheels), "pip (aarch64 runtime wheels)",
         hint="it downloads manylinux aarch64 wheels from PyPI")
    shutil.rmtree(site, ignore_errors=True)
    os.replace(fresh, site)


def _write_ready(root: Path, info: dict) -> None:
    (root / READY).write_text(json.dumps(info, indent=2) + "\n")


def _run(command: list[str], what: str, hint: str = "", stdin=None) -> None:
    proc = subprocess.run(command, stdin=stdin, capture_output=True, text=True)
    if proc.returncode:
        lines = [line for line in (proc.stderr + proc.stdout).splitlines()
                 if line.strip() and not line.startswith("WARNING: Location")]
        tail = lines[-1].strip() if lines else f"exit code {proc.returncode}"
        raise ExternalToolError(f"{what} failed: {tail}" + (f" ({hint})" if hint else ""))


def _versions(wheels: dict[str, str | None]) -> str:
    return ", ".join(f"{name} {version or '(latest)'}" for name, version in wheels.items())


# -- comparing outputs ------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputMatch:
    parity: Parity  # x86 as the reference
    max_steps: int | None  # quantized outputs: the largest difference in quantization steps
    identical: bool

    def to_dict(self) -> dict:
        return {**self.parity.to_dict(), "max_steps": self.max_steps, "identical": self.identical}


def compare(x86: np.ndarray, arm: np.ndarray,
            quantization: tuple[float, int] | None = None) -> OutputMatch:
    """Raw outputs of the same inputs, (N, ...) each. ``quantization`` (scale, zero point) of the
    output: integer outputs differ by whole steps and are dequantized for the rest; a float
    output with a scale (ONNX QDQ's final DequantizeLinear) is counted in steps of it."""
    if x86.shape != arm.shape:
        raise ValueError(f"output shapes differ: x86 {x86.shape}, aarch64 {arm.shape}")
    a, b = x86.reshape(len(x86), -1).astype(np.float64), arm.reshape(len(arm), -1).astype(np.float64)
    scale, zero_point = quantization or (None, 0)
    steps = None
    if np.issubdtype(x86.dtype, np.integer):
        steps = int(np.abs(a - b).max()) if a.size else 0
        if scale:
            a, b = (a - zero_point) * scale, (b - zero_point) * scale
    parity = parity_compare(a, b)
    if steps is None and scale:
        steps = round(parity.max_abs_diff / scale)
    return OutputMatch(parity, steps, bool(np.array_equal(x86, arm)))


def tolerance(parity: ParitySpec, precision: str) -> Tolerance:
    """How close the two runs of an artifact must be: the target's tolerance for its precision
    (a precision edgekit did not record, e.g. a user's file: int8's), between two runs."""
    return parity.tolerance(precision if precision in PRECISIONS else "int8").between_runs()


# -- the run ----------------------------------------------------------------------------------


@dataclass
class ArtifactMatch:
    artifact: str
    backend: str
    precision: str
    output_dtype: str | None = None
    match: dict = field(default_factory=dict)  # OutputMatch.to_dict()
    failures: list[str] = field(default_factory=list)  # outside the tolerance between runs
    ok: bool = False
    error: str | None = None  # the artifact did not run under emulation
    x86_runtime: dict | None = None
    aarch64_runtime: dict | None = None
    aarch64_host: dict | None = None  # what the emulated Python saw (machine: aarch64)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EmulationReport:
    arch: str
    cpu: str
    cpu_reason: str
    guest: dict
    images: list[str]
    preprocessing: str
    matches: list[ArtifactMatch] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    parity: ParitySpec = field(default_factory=ParitySpec)  # the target's, else the defaults

    def check(self) -> None:
        """A ParityError naming every artifact that failed or differs."""
        bad = [f"{Path(m.artifact).name}: {m.error or _summary(m)}" for m in self.matches if not m.ok]
        if bad:
            raise ParityError("aarch64 (emulated) differs from x86 or failed for " + "; ".join(bad))

    def to_json(self) -> str:
        return json.dumps(json_safe({
            "arch": self.arch, "emulated": True, "cpu": self.cpu, "guest": self.guest,
            "images": self.images, "preprocessing": self.preprocessing, "skipped": self.skipped,
            "artifacts": [m.to_dict() for m in self.matches]}), indent=2)


def target_of(manifest: Manifest | None) -> TargetProfile | None:
    """The target a build was made for, when its profile can be read here."""
    if manifest is None:
        return None
    try:
        return load_target(manifest.target)
    except EdgekitError:
        return None


def cpu_for(manifest: Manifest | None) -> tuple[str, str]:
    """The qemu CPU model for the manifest's target (its Cortex core), else a generic Armv8.2."""
    target = target_of(manifest)
    if target is not None:
        model = target.cpu.model
        found = re.search(r"Cortex-(A\d+)", model)
        if found and f"cortex-{found.group(1).lower()}" in CPUS:
            return f"cortex-{found.group(1).lower()}", f"target {manifest.target}: {model}"
    return DEFAULT_CPU, "no target CPU known: a generic Armv8.2 core"


def _manifest_of(path: Path) -> Manifest | None:
    folder = path if path.is_dir() else path.parent
    return Manifest.read(folder) if (folder / MANIFEST_NAME).is_file() else None


def _preprocessing(manifest: Manifest | None, session) -> tuple[Preprocessing, str]:
    if manifest is not None:
        return manifest.model_meta().preprocessing, "the manifest's preprocessing"
    spec = session.input
    size = spec.shape[1] if spec.layout == "NHWC" else spec.shape[2]
    return Preprocessing.torchvision(size), f"ImageNet preprocessing at {size}px (no manifest)"


def emulate(path: str | Path, arch: str = "aarch64", n_images: int = DEFAULT_IMAGES,
            progress: Say | None = None, verify: bool = True) -> EmulationReport:
    """Run each artifact at ``path`` that has an aarch64 runtime (emulated_backends) on this
    machine and under qemu on the same prepared images and compare the outputs within the
    target's tolerance (a build's files checked against its manifest first)."""
    from ..calibration import load_calibration

    say = progress or (lambda _m: None)
    if arch not in ARCHES:
        raise InputError(f"cannot emulate {arch}: only {', '.join(ARCHES)}")
    path = Path(path).absolute()
    artifacts = artifacts_in(path, verify)
    emulated = [b.name for b in emulated_backends()]
    runs = f"--emulate runs {' and '.join(emulated)} artifacts"
    runnable = [a for a in artifacts if a[1] in emulated]
    if not runnable:
        raise InputError(f"nothing to emulate at {path}: {runs}")
    root = prepare_root(say)
    manifest = _manifest_of(path)
    cpu, reason = cpu_for(manifest)
    write_cpuinfo(root, cpu)
    ready = read_ready(root) or {}
    guest = {"suite": ready.get("suite", SUITE), "python": GUEST_PYTHON, "wheels": ready.get("wheels")}
    target = target_of(manifest)
    report = EmulationReport(arch, cpu, reason, guest, [], "",
                             parity=target.parity if target is not None else ParitySpec())
    report.skipped = [f"{a[0].name}: {a[1]} artifact ({runs})" for a in artifacts if a not in runnable]
    images: dict[Preprocessing, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="edgekit-emulate-") as tmp:
        for i, (artifact, backend, precision, _parity) in enumerate(runnable):
            session = get_backend(backend).load(artifact)
            pre, report.preprocessing = _preprocessing(manifest, session)
            if pre not in images:
                calib = load_calibration(None, pre, size=n_images)
                images[pre] = calib.images
                report.images = [Path(f).name for f in calib.files]
            inputs = Path(tmp, f"{i}_inputs.npy")
            np.save(inputs, np.stack([session.prepare(x) for x in images[pre]]))
            report.matches.append(_match(artifact, backend, precision, inputs, root, cpu,
                                         session.output_grid(),
                                         tolerance(report.parity, precision), say))
    return report


def _match(artifact: Path, backend: str, precision: str, inputs: Path, root: Path, cpu: str,
           quantization: tuple[float, int] | None, tol: Tolerance, say: Say) -> ArtifactMatch:
    result = ArtifactMatch(str(artifact), backend, precision)
    config = {"artifact": str(artifact), "threads": 1, "inputs": str(inputs)}
    x86_out = inputs.with_name(inputs.stem + "_x86.npy")
    arm_out = inputs.with_name(inputs.stem + "_arm.npy")
    x86 = run_runner([sys.executable, str(RUNNER)], {**config, "outputs": str(x86_out)})
    result.x86_runtime = x86["runtime"]
    say(f"{artifact.name} ({backend} {precision}): x86 done, running under qemu -cpu {cpu}")
    started = time.monotonic()
    try:
        arm = run_runner(qemu_command(root, cpu), {**config, "outputs": str(arm_out)},
                         timeout=RUN_TIMEOUT, env=guest_env())
    except EdgekitError as exc:
        result.error = str(exc).split(": ", 1)[-1]
        return result
    except subprocess.TimeoutExpired:
        result.error = f"no result after {RUN_TIMEOUT:.0f} s under emulation"
        return result
    say(f"{artifact.name}: aarch64 done ({time.monotonic() - started:.0f} s wall under emulation, "
        "not a benchmark)")
    result.aarch64_runtime, result.aarch64_host = arm["runtime"], arm["host"]
    if arm["host"]["machine"] != "aarch64":
        result.error = f"the emulated Python reports machine {arm['host']['machine']!r}"
        return result
    result.output_dtype = arm["output_dtype"]
    output = compare(np.load(x86_out), np.load(arm_out), quantization)
    result.match, result.failures = output.to_dict(), tol.failures(output.parity)
    result.ok = not result.failures
    return result


# -- report -----------------------------------------------------------------------------------


def _summary(m: ArtifactMatch) -> str:
    d = m.match
    steps = f"max {d['max_steps']} quantization step(s), " if d.get("max_steps") is not None else ""
    return (f"{steps}max abs diff {d['max_abs_diff']:.3g}, SQNR {d['sqnr_db']:.1f} dB, "
            f"top-1 agreement {d['top1_agreement']:.0%}"
            + (f" ({'; '.join(m.failures)})" if m.failures else ""))


def _precisions(report: EmulationReport) -> list[str]:
    shown = {m.precision if m.precision in PRECISIONS else "int8" for m in report.matches}
    return [p for p in PRECISIONS if p in shown] or list(PRECISIONS)


def _runtime(rt: dict | None) -> str:
    if not rt:
        return "-"
    details = rt.get("details") or {}
    accel = (", XNNPACK" if details["xnnpack"] else ", no XNNPACK") if "xnnpack" in details else ""
    return f"{rt['name']} {rt['version']}{accel}"


def match_table(report: EmulationReport, title: str) -> Table:
    t = Table(title=title, title_justify="left")
    numeric = ("images", "max abs diff", "max steps", "SQNR dB", "top-1 agree")
    for c in ("artifact", "backend", "prec", "output", *numeric, "match", "aarch64 runtime (emulated)"):
        t.add_column(c, justify="right" if c in numeric else "left")
    for m in report.matches:
        d = m.match
        if m.error:
            cells = [m.output_dtype or "-", "-", "-", "-", "-", "-", f"FAILED: {m.error}"]
        else:
            cells = [m.output_dtype or "-", str(d["n_images"]), f"{d['max_abs_diff']:.3g}",
                     "-" if d["max_steps"] is None else str(d["max_steps"]), f"{d['sqnr_db']:.1f}",
                     f"{d['top1_agreement']:.0%}",
                     ("identical" if d["identical"] else "yes") if m.ok else "NO"]
        t.add_row(Path(m.artifact).name, m.backend, m.precision, *cells, _runtime(m.aarch64_runtime),
                  style=None if m.ok else "bold red")
    lines = [
        f"aarch64: qemu-aarch64-static -cpu {report.cpu} ({report.cpu_reason}), Debian "
        f"{report.guest['suite']} arm64, Python 3.11",
        "reference: the same runner and inputs on this machine",
        f"inputs: {len(report.images)} bundled photos, {report.preprocessing}",
        "match: the target's parity tolerance between two runs of an artifact: "
        + "; ".join(f"{p} {tolerance(report.parity, p).describe()}" for p in _precisions(report)),
        "EMULATED: no timings, they would mean nothing",
        *[f"skipped {note}" for note in report.skipped]]
    t.caption = "\n".join(lines)
    t.caption_justify = "left"
    return t
