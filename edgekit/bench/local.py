"""Local benchmarks: each (artifact, threads) runs in a fresh process through runner.py, so load
time, first inference and peak memory are the artifact's own, not this process's."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import EdgekitError, InputError, MissingDependencyError
from ..backends.base import artifact_suffixes, backend_for_path, backend_named_by
from ..limits import check_threads
from ..manifest import MANIFEST_NAME, Manifest, verify_artifact
from ..quiet import native_output_silenced

RUNNER = Path(__file__).with_name("runner.py")


@dataclass
class BenchSettings:
    threads: int | None = None
    warmup: int = 10
    iterations: int | None = None
    duration: float | None = None
    per_op: bool = False
    ov_precision: str | None = None  # None: OpenVINO's device default (bf16 here), recorded

    def runner_config(self, artifact: Path) -> dict:
        return {"artifact": str(artifact), "threads": self.threads, "warmup": self.warmup,
                "iterations": self.iterations, "duration": self.duration, "per_op": self.per_op,
                "ov_precision": self.ov_precision}


@dataclass
class BenchResult:
    artifact: str
    backend: str
    precision: str
    threads: int | None
    runtime: dict
    load_ms: float
    first_inference_ms: float
    latency_ms: dict
    throughput_fps: float
    peak_rss_mb: float
    size_bytes: int
    n: int
    device: str = "local"
    group: str = ""  # the PATH it came from, when several were benchmarked together
    emulated: bool = False
    parity: dict | None = None  # from the manifest, when benchmarking a convert folder
    per_op: list | None = None
    per_op_note: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _guess(path: Path) -> tuple[str, str]:
    """(backend, precision) of a file outside a convert folder: precision from the name when it
    says, else read from the model (its weights' type), else "unknown"."""
    backend = backend_named_by(path)
    precision = next((p for p in ("uint8", "int8", "fp16", "fp32") if p in path.stem), None)
    if len(backend.precisions) == 1:  # the Edge TPU runs int8 only
        precision = backend.precisions[0]
    if precision is None:
        try:
            with native_output_silenced():
                precision = backend.stored_precision(path)
        except (EdgekitError, ValueError, RuntimeError):  # no runtime, unreadable: the run says why
            precision = "unknown"
    return backend.name, precision


def artifacts_in(path: Path, verify: bool = True) -> list[tuple[Path, str, str, dict | None]]:
    """(file, backend, precision, parity) for one artifact or every artifact in a convert folder.
    The files a manifest lists must all exist and (``verify``) match its sha256, before any run."""
    path = Path(path)
    if path.is_dir():
        if not (path / MANIFEST_NAME).is_file():
            found = sorted(p for p in path.iterdir() if p.suffix in artifact_suffixes())
            if not found:
                raise InputError(f"{path} has no {MANIFEST_NAME} and no "
                                 f"{'/'.join(artifact_suffixes())} files")
            return [(p, *_guess(p), None) for p in found]
        manifest = Manifest.read(path)
        return [(verify_artifact(manifest, a, verify), a.backend, a.precision, a.parity)
                for a in manifest.artifacts]
    if not path.exists():
        raise InputError(f"artifact not found: {path}")
    if path.suffix not in artifact_suffixes():
        raise InputError(f"cannot benchmark {path.name}: expected a {', '.join(artifact_suffixes())} "
                         "file or a convert output folder")
    manifest_file = path.parent / MANIFEST_NAME
    if manifest_file.is_file():
        manifest = Manifest.read(path.parent)
        for a in manifest.artifacts:
            if a.path == path.name:
                return [(verify_artifact(manifest, a, verify), a.backend, a.precision, a.parity)]
    return [(path, *_guess(path), None)]


def run_runner(command: list[str], config: dict, timeout: float = 1800,
               env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run([*command, json.dumps(config)], capture_output=True, text=True,
                          timeout=timeout, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgekitError(f"benchmark runner failed for {config['artifact']}: {tail}")
    data = json.loads(lines[-1])
    if "error" in data:
        if data.get("kind") == "missing_runtime":
            raise MissingDependencyError(data["error"].split(": install one of ")[-1].split(",")[0],
                                         backend_for_path(Path(config["artifact"])).extra)
        if data.get("kind") in ("invalid_model", "bad_input"):  # a corrupt file, too many threads
            raise InputError(data["error"])
        raise EdgekitError(f"benchmark of {config['artifact']} failed: {data['error']}")
    return data


def bench_artifact(path: Path, backend: str, precision: str, settings: BenchSettings,
                   parity: dict | None = None) -> BenchResult:
    data = run_runner([sys.executable, str(RUNNER)], settings.runner_config(path))
    return result_from_runner(data, path, backend, precision, parity)


def result_from_runner(data: dict, path: Path, backend: str, precision: str, parity: dict | None,
            device: str = "local", emulated: bool = False) -> BenchResult:
    return BenchResult(
        artifact=str(path), backend=backend, precision=precision, threads=data["threads"],
        runtime=data["runtime"], load_ms=data["load_ms"],
        first_inference_ms=data["first_inference_ms"], latency_ms=data["latency_ms"],
        throughput_fps=data["throughput_fps"], peak_rss_mb=data["peak_rss_mb"],
        size_bytes=data["size_bytes"], n=data["n"], device=device, emulated=emulated,
        parity=parity, per_op=data.get("per_op"), per_op_note=data.get("per_op_note"),
        extra={"host": data.get("host"), "rss_runtime_imported_mb": data.get("rss_runtime_imported_mb")})


def bench(paths: str | Path | list[str | Path], threads: list[int | None] | None = None,
          warmup: int = 10, iterations: int | None = None, duration: float | None = None,
          per_op: bool = False, ov_precision: str | None = None, rounds: int = 1,
          progress=None, verify: bool = True) -> list[BenchResult]:
    """Benchmark artifacts and/or whole convert folders at each thread count.

    With ``rounds`` > 1 every (artifact, threads) runs once per round, round after round, so that a
    noisy machine's slow spells hit every artifact alike; each reported result is the run with the
    median p50 of its rounds, and ``extra["p50_rounds"]`` lists them all."""
    say = progress or (lambda _m: None)
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise InputError("nothing to benchmark: give an artifact or a convert folder")
    # each PATH is a group: speedups over fp32 and "fastest" compare artifacts of one build
    for t in threads or []:
        check_threads(t)
    items = [(str(path), *item) for path in paths for item in artifacts_in(Path(path), verify)]
    if ov_precision:
        warn_ov_precision([artifact for _, artifact, *_ in items], say)
    runs: list[list[BenchResult]] = [[] for _ in items for _ in threads or [None]]
    for r in range(rounds):
        slot = 0
        for group, artifact, backend, precision, parity in items:
            for t in threads or [None]:
                settings = BenchSettings(t, warmup, iterations, duration, per_op, ov_precision)
                say(f"{artifact.name} ({backend} {precision}), threads {t or 'default'}"
                    + (f", round {r + 1}/{rounds}" if rounds > 1 else ""))
                result = bench_artifact(artifact, backend, precision, settings, parity)
                if len(paths) > 1:
                    result.group = group
                runs[slot].append(result)
                slot += 1
    return [_median_run(rs) for rs in runs]


def warn_ov_precision(artifacts: list[Path], say) -> None:
    others = [a.name for a in artifacts if a.suffix != ".xml"]
    if others:
        say(f"--ov-precision applies only to OpenVINO artifacts (.xml): ignored for {', '.join(others)}")


def _median_run(results: list[BenchResult]) -> BenchResult:
    if len(results) == 1:
        return results[0]
    ordered = sorted(results, key=lambda r: r.latency_ms["p50"])
    chosen = ordered[(len(ordered) - 1) // 2]
    chosen.extra["p50_rounds"] = [r.latency_ms["p50"] for r in results]
    return chosen
