"""`edgekit bench`: latency of artifacts, locally or on devices over SSH, per thread count, with
per-op breakdown."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ..manifest import BENCH_CHART
from ..bench.report import chart as draw_chart, per_op_tables, table, write_outputs
from .console import console as make_console

BENCH_JSON = "bench.json"  # a build's own timings, beside its manifest: the demo picks by them


def _threads(ctx, param, value: str | None) -> list[int | None]:
    if value is None:
        return [None]
    try:
        counts = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected N or N,M,... got {value!r}") from None
    if not counts or any(c < 1 for c in counts):
        raise click.BadParameter("thread counts must be >= 1")
    from ..limits import check_threads

    for c in counts:
        check_threads(c)
    return counts


@click.command("bench")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--threads", callback=_threads, default=None,
              help="Thread count or list, e.g. 1,2,4 [default: the runtime's default].")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--iterations", "-n", type=click.IntRange(min=1), default=None,
              help="Measured runs [default: 100 unless --duration].")
@click.option("--duration", type=click.FloatRange(min=0.1), default=None,
              help="Measure for this many seconds instead of a fixed count.")
@click.option("--rounds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Run every artifact this many times, round after round, and report each one's "
                   "median-p50 run: side-by-side figures on a noisy machine.")
@click.option("--paired", is_flag=True,
              help="Compare the artifacts in one process: alternate single invocations of each (in a "
                   "rotating order) and report every one's time against the first (or --baseline) and "
                   "its build's fp32 as a ratio of medians with a 95% interval; robust to a noisy machine.")
@click.option("--pairs", type=click.IntRange(min=2, max=1_000_000), default=1000, show_default=True,
              help="With --paired: invocations of each artifact.")
@click.option("--baseline", default=None, metavar="PATH|NAME",
              help="With --paired: the artifact the others are compared with [default: the first].")
@click.option("--per-op", is_flag=True, help="Time per op type and the slowest ops.")
@click.option("--ov-precision", type=click.Choice(["f32", "bf16", "f16"]), default=None,
              help="OpenVINO inference precision [default: the device's, recorded].")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write results as JSON.")
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), default=None,
              help="Write results as CSV.")
@click.option("--chart/--no-chart", default=True, show_default=True,
              help="For a convert folder: save latency-vs-agreement PNG beside the manifest.")
@click.option("--device", "devices", multiple=True, metavar="USER@HOST[:PORT]|NAME",
              help="Run on a device over SSH instead of here; repeat or comma-separate for "
                   "several (run concurrently). NAME comes from the inventory.")
@click.option("--devices", "inventory", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Device inventory [default: ./devices.yaml, then ~/.config/edgekit/devices.yaml].")
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="SSH private key for devices that name none [default: your keys / ssh-agent].")
@click.option("--trust-new-host", is_flag=True,
              help="Accept and save an unknown device host key (to ~/.config/edgekit/known_hosts).")
@click.option("--no-verify", is_flag=True,
              help="Use a build's files even when they no longer match its manifest's sha256.")
@click.option("--emulate", type=click.Choice(["aarch64"]), default=None,
              help="Run the .tflite/.onnx artifacts with the aarch64 runtimes under qemu and compare "
                   "their outputs with this machine's on real images (no timings). The first use "
                   "builds an aarch64 root in ~/.cache/edgekit (needs root, qemu-user-static, "
                   "debootstrap).")
def command(paths, threads, warmup, iterations, duration, rounds, paired, pairs, baseline, per_op, ov_precision,
            json_path, csv_path, chart, devices, inventory, key, trust_new_host, no_verify, emulate) -> None:
    """Benchmark artifacts (.tflite, .onnx, .xml) and/or every artifact of convert folders;
    several PATHs share one table (e.g. your build beside a reference model).

    Each run happens in a fresh process: load/compile time, first inference, warm latency
    (min/mean/p50/p90/p99/max/std over the measured runs), throughput and peak memory.
    With --device the artifacts and a standalone runner are copied to the device over SSH
    (key authentication, host keys checked), run there and cleaned up. With --emulate aarch64
    the same runner runs under qemu with the aarch64 wheels and the outputs are compared.
    """
    if emulate and (devices or inventory or key or trust_new_host or per_op or iterations or duration
                    or ov_precision or csv_path or threads != [None] or len(paths) > 1 or rounds > 1):
        raise click.UsageError("--emulate compares outputs only: it takes one PATH and no --device (or its "
                               "options), --threads, --iterations, --duration, --rounds, --per-op, "
                               "--ov-precision or --csv")
    from ..api import BenchFailed, bench
    from ..fileio import check_outputs

    path = Path(paths[0])
    chart_file = path / BENCH_CHART if chart and not devices and not emulate and len(paths) == 1 \
        and path.is_dir() else None
    check_outputs([("--json", json_path), ("--csv", csv_path), ("the chart", chart_file)], paths,
                  allowed=[*([chart_file] if chart_file else []),
                           *((p if p.is_dir() else p.parent) / BENCH_JSON for p in paths)])
    err = make_console(stderr=True)
    say = lambda m: err.print(f"bench: {m}", highlight=False)  # noqa: E731
    if emulate:
        _emulate(path, emulate, json_path, say, not no_verify)
        return
    if paired or baseline:
        if not paired:
            raise click.UsageError("--baseline applies with --paired")
        if iterations or duration or rounds > 1 or per_op:
            raise click.UsageError("--paired times --pairs alternating invocations: no --iterations, "
                                   "--duration, --rounds or --per-op")
        _paired(paths, threads, pairs, warmup, baseline, ov_precision, devices, inventory, key, trust_new_host,
                not no_verify, json_path, csv_path, say)
        return
    failures = []
    try:
        results = bench(paths, threads=threads, warmup=warmup, iterations=iterations, duration=duration,
                        rounds=rounds, per_op=per_op, ov_precision=ov_precision, devices=devices,
                        inventory=inventory, key=key, trust_new_host=trust_new_host, verify=not no_verify,
                        progress=say)
    except BenchFailed as failed:  # the devices that worked still get their rows
        results, failures = failed.results, failed.failures
    out = make_console()
    if results:
        title = f"edgekit bench {' '.join(str(p) for p in paths)}"
        if rounds > 1:
            title += f" (median of {rounds} interleaved rounds)"
        out.print(table(results, title=title))
    for item in per_op_tables(results) if per_op else []:
        out.print(item)
    write_outputs(results, json_path, csv_path)
    for failure in failures:  # each failed device (or artifact on it), one line
        click.echo(f"error: {failure.message}", err=True)
    if failures:
        sys.exit(max(f.exit_code for f in failures))
    if chart_file is not None and draw_chart(results, chart_file):
        err.print(f"chart: {chart_file}", highlight=False)


def _paired(paths, threads, pairs, warmup, baseline, ov_precision, devices, inventory, key, trust_new_host,
            verify, json_path, csv_path, say) -> None:
    import json

    from ..api import bench_paired
    from ..bench.paired import table as paired_table, to_csv
    from ..fileio import write_text_atomic

    results = bench_paired(paths, threads=threads, pairs=pairs, warmup=max(warmup, 1), baseline=baseline,
                           ov_precision=ov_precision, devices=devices, inventory=inventory, key=key,
                           trust_new_host=trust_new_host, verify=verify, progress=say)
    out = make_console()
    for result in results:
        out.print(paired_table(result))
    if json_path:
        write_text_atomic(json_path, json.dumps([r.to_dict() for r in results], indent=2) + "\n")
    if csv_path:
        write_text_atomic(csv_path, to_csv(results))


def _emulate(path: Path, arch: str, json_path: Path | None, say, verify: bool = True) -> None:
    from ..api import emulate
    from ..bench.emulate import match_table
    from ..fileio import write_text_atomic

    report = emulate(path, arch, progress=say, verify=verify)
    make_console().print(match_table(report, f"edgekit bench {path} --emulate {arch}: output match"))
    if json_path:
        write_text_atomic(json_path, report.to_json() + "\n")
    report.check()
