"""edgekit's Python API: one function per CLI command, with the command's options as keyword
arguments (``--calib-size 50`` is ``calib_size=50``), returning dataclasses with ``to_dict()``.

    import edgekit
    manifest = edgekit.convert("x86", "mobilenet_v2", backend="onnxruntime", out="build/x86")
    results = edgekit.bench(manifest.folder, iterations=200)
    scores = edgekit.evaluate([manifest.folder], "labelled.tsv")

``edgekit.convert`` is convert.convert itself; the functions here are the commands whose options
the library functions they call take in another form. Each CLI command parses its options, calls
one of these and prints the result. Heavy modules (torch, the runtimes) load when a function runs.
Bad input raises an EdgekitError subclass with a one-line message (errors.py).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import EdgekitError, InputError

if TYPE_CHECKING:
    from torch import nn

    from .bench.emulate import EmulationReport
    from .bench.local import BenchResult
    from .bench.paired import PairedComparison
    from .bench.remote import DeviceFailure
    from .evaluate import EvalResult
    from .quant.report import QuantReport
    from .targets import TargetProfile

Progress = Callable[[str], None]
PathLike = str | Path

QUANT_REPORT_IMAGES = 32  # images the layers are compared on
QUANT_REPORT_CALIB_SIZE = 200


class BenchFailed(EdgekitError):
    """Some devices (or artifacts on them) failed: ``failures`` says which, one line each, and
    ``results`` holds the rows of those that worked."""

    def __init__(self, failures: list[DeviceFailure], results: list[BenchResult]):
        self.failures, self.results = failures, results
        self.exit_code = max(f.exit_code for f in failures)
        super().__init__("; ".join(f.message for f in failures))


def bench(paths: PathLike | Sequence[PathLike], *, threads: int | Iterable[int] | None = None,
          warmup: int = 10, iterations: int | None = None, duration: float | None = None,
          rounds: int = 1, per_op: bool = False, ov_precision: str | None = None,
          devices: Iterable[str] = (), inventory: PathLike | None = None, key: PathLike | None = None,
          trust_new_host: bool = False, verify: bool = True,
          progress: Progress | None = None) -> list[BenchResult]:
    """Latency of artifacts (.tflite, .onnx, .xml) and/or every artifact of convert folders, each
    (artifact, thread count) in a fresh process; as `edgekit bench`.

    ``threads``: a count or several (None: the runtime's default); ``iterations`` or ``duration``
    (seconds) measured runs after ``warmup``; ``rounds`` > 1 runs everything round after round and
    keeps each one's median-p50 run. ``devices`` (USER@HOST[:PORT] or inventory names) runs one
    PATH on devices over SSH instead; when some fail, BenchFailed carries the others' results.
    ``verify``: check a build's files against its manifest's sha256."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    counts = [None] if threads is None else [threads] if isinstance(threads, int) else list(threads)
    devices = [devices] if isinstance(devices, str) else list(devices)  # each may be comma-separated
    if iterations and duration:
        raise InputError("give --iterations or --duration, not both")
    if not devices and (inventory or key or trust_new_host):
        raise InputError("--devices, --key and --trust-new-host need --device")
    if devices and (len(paths) > 1 or rounds > 1):
        raise InputError("--device takes one PATH and no --rounds")
    if not devices:
        from .bench.local import bench as bench_local

        return bench_local(paths, counts, warmup, iterations, duration, per_op, ov_precision,
                           rounds=rounds, progress=progress, verify=verify)
    from .bench.remote import bench_remote, resolve_devices

    outcome = bench_remote(paths[0], resolve_devices(devices, inventory, key), counts, warmup, iterations,
                           duration, per_op, ov_precision, trust_new_host, progress, verify=verify)
    if outcome.failures:
        raise BenchFailed(outcome.failures, outcome.results)
    return outcome.results


def bench_paired(paths: PathLike | Sequence[PathLike], *, threads: int | Iterable[int] | None = None,
                 pairs: int = 1000, warmup: int = 50, baseline: str | None = None,
                 ov_precision: str | None = None, devices: Iterable[str] = (),
                 inventory: PathLike | None = None, key: PathLike | None = None,
                 trust_new_host: bool = False, verify: bool = True,
                 progress: Progress | None = None) -> list[PairedComparison]:
    """`edgekit bench --paired`: every artifact of ``paths`` loaded in one process (here, or on each
    device), single invocations alternated in a rotating order, ``pairs`` times; per artifact p50/p90
    and, against the first (or ``baseline``, a path or file name) and against its build's fp32, the
    ratio of medians with a 95% bootstrap interval. One comparison per thread count and device."""
    from .bench.paired import bench_paired as paired_local, bench_paired_device

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    counts = [None] if threads is None else [threads] if isinstance(threads, int) else list(threads)
    devices = [devices] if isinstance(devices, str) else list(devices)
    if not devices and (inventory or key or trust_new_host):
        raise InputError("--devices, --key and --trust-new-host need --device")
    say = progress or (lambda _m: None)
    results = []
    if not devices:
        for t in counts:
            say(f"paired: {pairs} alternating invocations, threads {t or 'default'}")
            results.append(paired_local(paths, t, pairs, warmup, baseline, ov_precision, verify))
        return results
    from .bench.remote import resolve_devices

    for device in resolve_devices(devices, inventory, key):
        for t in counts:
            say(f"paired on {device.name}: {pairs} alternating invocations, threads {t or 'default'}")
            results.append(bench_paired_device(paths, device, t, pairs, warmup, baseline, ov_precision,
                                               verify, trust_new_host))
    return results


def emulate(path: PathLike, arch: str = "aarch64", *, verify: bool = True,
            progress: Progress | None = None) -> EmulationReport:
    """Run the .tflite/.onnx artifacts at ``path`` with ``arch``'s runtimes under qemu and compare
    their outputs with this machine's (`edgekit bench PATH --emulate aarch64`); the report's
    ``check()`` raises ParityError when one differs."""
    from .bench.emulate import emulate as emulate_outputs

    return emulate_outputs(path, arch, progress=progress, verify=verify)


def evaluate(paths: PathLike | Sequence[PathLike], data: PathLike, *, limit: int | None = None,
             normalisation: str | None = None, labels: Sequence[str] | None = None,
             verify: bool = True, progress: Progress | None = None) -> list[EvalResult]:
    """Top-1/top-5 of checkpoints, artifacts or whole convert folders on labelled ``data`` (class
    subfolders or a TSV of path<TAB>class), and each artifact's agreement with its own float
    model; as `edgekit eval`. ``limit``: a seeded sample of that many images. ``normalisation``
    (and ``labels``): how to feed artifacts no manifest describes."""
    from .evaluate import BareInput, evaluate as evaluate_paths

    if labels is not None and normalisation is None:
        raise InputError("--labels applies with --normalisation (to artifacts without a manifest)")
    bare = BareInput(normalisation, tuple(labels) if labels else None) if normalisation else None
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    return evaluate_paths(paths, data, limit, progress=progress, bare=bare, verify=verify)


def quant_report(build: PathLike | None = None, *, model: str | None = None, weights: str | None = None,
                 width: float | None = None, resolution: int | None = None, target: str | None = None,
                 calib: PathLike | None = None, calib_size: int | None = None,
                 calib_method: str | None = None, images: PathLike | None = None,
                 n_images: int = QUANT_REPORT_IMAGES, progress: Progress | None = None) -> QuantReport:
    """Per-layer int8 error (`edgekit quant-report`): of a convert folder's ONNX Runtime fp32 +
    int8 pair (``build``), compared on the images it was calibrated on; else of ``model`` /
    ``weights`` prepared and quantized as ``target``'s int8 build (default rpi4) with ``calib``
    (``calib_size`` images, default 200) and ``calib_method``. ``images``: compare on these instead
    (``n_images`` of them)."""
    from .quant.report import calibration_text, report_on_build, report_on_model, simulation

    say = progress or (lambda _m: None)
    model_options = {"model": model, "weights": weights, "width": width, "resolution": resolution,
                     "target": target, "calib": calib, "calib_size": calib_size, "calib_method": calib_method}
    if build is not None:
        from .manifest import Manifest

        manifest = Manifest.read(build)
        given = [f"--{name.replace('_', '-')}" for name, value in model_options.items() if value is not None]
        if given:
            calibrated = calibration_text(manifest.calibration)
            raise InputError(
                f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to a build folder: its "
                f"int8 artifact is quantized already" + (f" (calibrated with {calibrated})" if calibrated else "")
                + ". Compare on other images with --images DIR; to try other settings, report on the "
                "model: edgekit quant-report --weights CKPT --calib DIR --calib-method M")
        return report_on_build(Path(build), _path(images), n_images, say, manifest=manifest)
    from .convert_plan import resolve_source
    from .targets import DEFAULT_TARGET

    sim = simulation(target or DEFAULT_TARGET, calib_method)  # refused before the model loads
    source = resolve_source(model, weights, width, resolution)
    return report_on_model(source, sim, calib, calib_size or QUANT_REPORT_CALIB_SIZE, _path(images), n_images,
                           say, model_text=weights or model or source.meta.arch)


def load(model: PathLike, weights: str | None = None, *, width: float | None = None,
         resolution: int | None = None, num_classes: int | None = None) -> nn.Module:
    """A model in eval mode, with ``.meta`` (architecture, preprocessing, labels): an edgekit
    checkpoint (.pth/.pt/.safetensors), or an architecture name with ``weights`` (None: its
    built-in ImageNet weights; "imagenet", "random", or a state_dict file) as `--model/--weights`."""
    from .models.loading import load_model

    if Path(model).suffix in CHECKPOINT_SUFFIXES:
        if weights is not None:
            raise InputError(f"{model} is a checkpoint already: give no weights")
        return load_model(None, str(model), width=width, resolution=resolution, num_classes=num_classes)
    return load_model(str(model), weights, width=width, resolution=resolution, num_classes=num_classes)


CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")


def targets() -> list[TargetProfile]:
    """Every device target (targets/*.yaml), as `edgekit targets`; ``to_dict()`` each."""
    from .targets import list_targets, load_target

    return [load_target(name) for name in list_targets()]


@dataclass(frozen=True)
class ModelInfo:
    """A standard variant of an architecture edgekit builds, and whether it has built-in weights."""

    name: str
    width: float
    resolution: int
    builtin_weights: bool

    def to_dict(self) -> dict:
        return asdict(self)


def models() -> list[ModelInfo]:
    """The standard MobileNet variants (`edgekit models`, without the parameter and MAC counts,
    which build every model: ``from edgekit.models import count``)."""
    from .models import STANDARD_VARIANTS
    from .models.builtin import find

    return [ModelInfo(v.name, v.width, v.resolution, find(v.name, v.width) is not None)
            for v in STANDARD_VARIANTS]


def _path(value: PathLike | None) -> Path | None:
    return None if value is None else Path(value)
