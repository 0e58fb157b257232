"""Edge TPU: the full-integer int8 TFLite model, checked op by op against the Edge TPU's
requirements, then compiled with ``edgetpu_compiler`` when it is installed.

The compiler runs only on x86-64 Debian/Ubuntu and comes from Google's Coral apt repository, so
it is often absent: the artifact is then the uncompiled full-integer model
(``*_edgetpu_uncompiled.tflite``; it runs on the CPU), with the pre-compile check in its details
telling how much of it the compiler would map.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConversionError, ExternalToolError, InputError
from ..fileio import atomic_path
from .base import Artifact, Backend, ConvertOptions, RuntimeInfo, Session, get_backend, register_backend
from .edgetpu_check import check
from .placement import Placement
from .tflite_quantizer import CALIBRATION_METHODS
from .tflite_session import TFLiteSession, interpreter_api, runtime_version

if TYPE_CHECKING:  # annotations only: importing them loads torch
    from ..calibration import CalibrationSet
    from ..source import ModelSource

COMPILER = "edgetpu_compiler"
COMPILER_MISSING = (f"{COMPILER} not found on PATH; install it on Debian/Ubuntu x86-64 from "
                    "Google's Coral apt repository (package edgetpu-compiler) and re-run")
COMPILE_TIMEOUT_S = 600
COMPILED_SUFFIX = "_edgetpu.tflite"
UNCOMPILED_SUFFIX = "_edgetpu_uncompiled.tflite"


_TABLE_HEADER = re.compile(r"^\s*Operator\s+Count\s+Status\s*$", re.MULTILINE)


def parse_compiler_log(text: str) -> dict:
    """edgetpu_compiler's summary (``-s``) -> the pre-compile check's report structure:
    ops_total, ops_mapped, operators [{op, count, status}], plus what only the compiler knows."""
    def number(pattern: str) -> int | None:
        match = re.search(pattern, text)
        return int(match.group(1)) if match else None

    operators = []
    in_table = False
    for line in text.splitlines():
        if _TABLE_HEADER.match(line):
            in_table = True
            continue
        if in_table:
            row = re.match(r"\s*([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$", line)
            if row:
                operators.append({"op": row.group(1), "count": int(row.group(2)),
                                  "status": row.group(3)})
            elif line.strip() and operators:
                in_table = False
    table_total = sum(o["count"] for o in operators)
    table_mapped = sum(o["count"] for o in operators if o["status"].startswith("Mapped to Edge TPU"))
    on_tpu = number(r"Number of operations that will run on Edge TPU:\s*(\d+)")
    on_cpu = number(r"Number of operations that will run on CPU:\s*(\d+)")
    total = number(r"Total number of operations:\s*(\d+)")
    version = re.search(r"Edge TPU Compiler version\s+(\S+)", text)
    memory = {m.group(1).strip(): m.group(2).strip() for m in re.finditer(
        r"^((?:On|Off)-chip memory [^:]+):\s*(\S+)\s*$", text, re.MULTILINE)}
    ops_total = total if total is not None else table_total
    ops_mapped = on_tpu if on_tpu is not None else table_mapped
    return {
        "compiler_version": version.group(1) if version else None,
        "ops_total": ops_total,
        "ops_mapped": ops_mapped,
        "ops_on_cpu": on_cpu if on_cpu is not None else ops_total - ops_mapped,
        "all_mapped": ops_total > 0 and ops_mapped == ops_total,
        "edgetpu_subgraphs": number(r"Number of Edge TPU subgraphs:\s*(\d+)"),
        "memory": memory,
        "operators": operators,
    }


def _stem(out: Path) -> str:
    name = out.name
    for suffix in (COMPILED_SUFFIX, UNCOMPILED_SUFFIX, ".tflite"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return out.stem


def _tail(text: str, lines: int = 8) -> str:
    return " | ".join(line.strip() for line in (text or "").strip().splitlines()[-lines:] if line.strip())


@register_backend
class EdgeTPUBackend(Backend):
    name = "edgetpu"
    suffix = ".tflite"
    name_endings = (COMPILED_SUFFIX, UNCOMPILED_SUFFIX)
    base = "tflite"  # a .tflite file runs through the tflite backend (backend_for_path)
    mixed_precision = False  # the Edge TPU runs fully integer models only
    default_calibration_method = "percentile"  # as tflite, whose int8 model it starts from
    calibration_methods = CALIBRATION_METHODS  # tflite's
    converts_in_python = True
    precisions = ("int8",)
    extra = "tflite"
    color = (214, 39, 40)
    modules = ("ai_edge_litert",)  # or tflite_runtime, as for tflite
    description = ("Coral Edge TPU: full-integer int8 TFLite, pre-compile op check, "
                   f"{COMPILER} when installed")

    def require(self) -> None:
        interpreter_api()

    def runtime_info(self) -> RuntimeInfo:
        name, _ = interpreter_api()
        return RuntimeInfo(name, runtime_version(name), {"compiler": shutil.which(COMPILER) or None})

    def require_converter(self) -> None:
        get_backend("tflite").require_converter()

    def convert(self, source: ModelSource, precision: str, calibration: CalibrationSet | None,
                out: Path, options: ConvertOptions) -> Artifact:
        if precision not in self.precisions:
            raise InputError(f"{self.name} builds int8 only, not {precision}")
        if options.float_layers:
            raise InputError("the Edge TPU needs a fully integer model: it cannot keep layers in "
                             f"float ({', '.join(options.float_layers)}); drop float_layers")
        if options.io_dtype not in ("uint8", "int8"):
            raise InputError(f"the Edge TPU needs integer input and output: set io_dtype to uint8 "
                             f"(what pycoral feeds) or int8, not {options.io_dtype}")
        tflite = get_backend("tflite")
        data, details = tflite.convert_bytes(source, precision, calibration, options)
        out = Path(out)
        stem = _stem(out)
        compiler = shutil.which(COMPILER)
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".edgetpu-", dir=out.parent) as tmp:
            plain = Path(tmp) / f"{stem}.tflite"
            plain.write_bytes(data)
            built = tflite.describe_built(plain, precision, details)  # input spec, ops, XNNPACK
            report = check(plain)
            if compiler is None:
                target = out.with_name(stem + UNCOMPILED_SUFFIX)
                with atomic_path(target) as tmp_out:
                    shutil.copyfile(plain, tmp_out)
                details = dict(built.details, compiled=False, compiler=COMPILER_MISSING,
                               notice=f"{COMPILER} not found: wrote the uncompiled full-integer model "
                                      f"{target.name} (runs on the CPU; compile it for the Edge TPU)")
            else:
                compiled, log = self._compile(compiler, plain, Path(tmp), source.name)
                target = out
                with atomic_path(target) as tmp_out:
                    shutil.copyfile(compiled, tmp_out)
                details = dict(built.details, compiled=True, compiler=parse_compiler_log(log),
                               ops=dict(_count(check(target))))
        details["precheck"] = {**report.to_dict(), "path": target.name}  # not the temporary copy
        # what `edgekit check` says of the file written (the compiler's verdict once compiled)
        details["placement"] = {**self.placement(target).summary(), "path": target.name}
        return Artifact(target, self.name, precision, built.input, [target], details)

    def _compile(self, compiler: str, model: Path, outdir: Path, model_name: str) -> tuple[Path, str]:
        """Run the compiler; (compiled file, its summary + operation log). The compiler failing
        on the model is a ConversionError; a compiler that cannot be run, an ExternalToolError."""
        def failed(detail: str) -> ConversionError:
            return ConversionError(self.name, model_name, "int8", f"{COMPILER} {detail}")

        args = [compiler, "-s", "-o", str(outdir), str(model)]
        try:
            proc = subprocess.run(args, check=True, capture_output=True, text=True,
                                  timeout=COMPILE_TIMEOUT_S)
        except subprocess.CalledProcessError as exc:
            raise failed(f"failed (exit {exc.returncode}): {_tail(exc.stderr) or _tail(exc.stdout)}") from exc
        except subprocess.TimeoutExpired as exc:
            raise failed(f"did not finish within {COMPILE_TIMEOUT_S} s") from exc
        except OSError as exc:
            raise ExternalToolError(f"cannot run {compiler}: {exc.strerror or exc}") from exc
        compiled = outdir / f"{model.stem}{COMPILED_SUFFIX}"
        if not compiled.is_file():
            raise failed(f"exited 0 but wrote no {compiled.name}: "
                         f"{_tail(proc.stdout)} {_tail(proc.stderr)}".strip())
        log = proc.stdout
        log_file = outdir / f"{model.stem}_edgetpu.log"
        if not _TABLE_HEADER.search(log) and log_file.is_file():  # older compilers: table in the .log
            log += "\n" + log_file.read_text(errors="replace")
        return compiled, log

    def placement(self, path: Path) -> Placement:
        """The pre-compile check's verdict (for a compiled file: the compiler's)."""
        return check(path).placement()

    def load(self, artifact: Artifact | Path, threads: int | None = None) -> Session:
        """A compiled model needs the libedgetpu delegate (InputError explains when it is
        missing); an uncompiled one runs on the CPU like any int8 .tflite."""
        self.require()
        path = artifact.path if isinstance(artifact, Artifact) else Path(artifact)
        return TFLiteSession(path, threads)


def _count(report) -> dict[str, int]:
    counts: dict[str, int] = {}
    for op in report.ops:
        counts[op.op] = counts.get(op.op, 0) + 1
    return counts
