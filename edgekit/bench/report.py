"""Bench results as a table, JSON, CSV and a latency-vs-agreement chart."""
from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

from rich.table import Table

from ..backends.base import backends
from ..fileio import atomic_path, write_text_atomic
from .local import BenchResult

JSON_KEYS = ("artifact", "backend", "precision", "threads", "runtime", "load_ms",
             "first_inference_ms", "latency_ms", "throughput_fps", "peak_rss_mb", "size_bytes", "n")


def speedups(results: list[BenchResult]) -> dict[int, float | None]:
    """p50 of the same backend's fp32 artifact (same device and threads) / this p50."""
    base = {(r.device, r.group, r.backend, r.threads): r.latency_ms["p50"]
            for r in results if r.precision == "fp32"}
    return {i: (base[(r.device, r.group, r.backend, r.threads)] / r.latency_ms["p50"]
                if (r.device, r.group, r.backend, r.threads) in base else None)
            for i, r in enumerate(results)}


def fastest(results: list[BenchResult]) -> dict[tuple, int]:
    """Index of the fastest artifact per (device, threads) among rows that compare: the artifacts
    of one convert folder, or the single files given side by side. A row with nothing beside it
    is not marked."""
    rows: dict[tuple, list[int]] = {}
    for i, r in enumerate(results):
        rows.setdefault((r.device, _build(r), threads_label(r)), []).append(i)
    return {key: min(ix, key=lambda i: results[i].latency_ms["p50"])
            for key, ix in rows.items() if len(ix) > 1}


def _build(r: BenchResult) -> str:
    """The folder a row came from when several PATHs were given; "" for single files (and for a
    lone PATH), which compare with each other."""
    return r.group if r.group and Path(r.group) != Path(r.artifact) else ""


def threads_label(r: BenchResult) -> str:
    """The thread count asked for, else the runtime's default when it reports the one it used."""
    if r.threads:
        return str(r.threads)
    used = (r.runtime.get("details") or {}).get("threads")
    return str(used) if isinstance(used, int) and used > 0 else "default"


def table(results: list[BenchResult], title: str = "edgekit bench") -> Table:
    t = Table(title=title, title_justify="left")
    multi_device = len({r.device for r in results}) > 1
    cols = (["device"] if multi_device else []) + [
        "artifact", "backend", "prec", "thr", "size MB", "load ms", "first ms", "p50 ms", "p90 ms",
        "p99 ms", "FPS", "RSS MB", "vs fp32", "agree", "runtime"]
    rounds = any(len(r.extra.get("p50_rounds", ())) > 1 for r in results)
    if rounds:
        cols.insert(cols.index("p90 ms"), "spread")
    for c in cols:
        t.add_column(c, justify="left" if c in ("device", "artifact", "backend", "prec", "runtime") else "right")
    ups = speedups(results)
    best = set(fastest(results).values())
    for i, r in enumerate(results):
        lat = r.latency_ms
        agree = (r.parity or {}).get("top1_agreement")
        up = ups[i]
        rt = r.runtime
        accel = _accel(rt)
        row = ([r.device] if multi_device else []) + [
            _label(r) + (" *" if i in best else ""), r.backend, r.precision,
            threads_label(r), f"{r.size_bytes / 1e6:.2f}", f"{r.load_ms:.0f}",
            f"{r.first_inference_ms:.2f}", f"{lat['p50']:.3f}"] + ([_spread(r)] if rounds else []) + [
            f"{lat['p90']:.3f}", f"{lat['p99']:.3f}",
            f"{r.throughput_fps:.0f}", f"{r.peak_rss_mb:.0f}", f"{up:.2f}x" if up else "-",
            f"{agree:.1%}" if isinstance(agree, float) else "-",
            f"{rt['name']} {rt['version']}{accel}" + (" (emulated)" if r.emulated else "")]
        t.add_row(*row, style="bold green" if i in best else None)
    t.caption = "; ".join((["* fastest per thread count (p50)"] if best else [])
                          + ["vs fp32 = speedup over the same backend's fp32"])
    if rounds:
        t.caption += ("; spread = (max - min) / median of the rounds' p50s: a smaller difference "
                      "between two rows is noise")
    if any(r.emulated for r in results):
        t.caption += "; EMULATED timings are meaningless"
    return t


def _spread(r: BenchResult) -> str:
    p50s = r.extra.get("p50_rounds") or []
    if len(p50s) < 2:
        return "-"
    return f"{(max(p50s) - min(p50s)) / statistics.median(p50s):.0%}"


def _label(r: BenchResult) -> str:
    """The file name, prefixed by its folder's name when it came from a folder among several PATHs."""
    name = Path(r.artifact).name
    return f"{Path(r.group).name}/{name}" if r.group and Path(r.group).is_dir() else name


def _accel(runtime: dict) -> str:
    d = runtime.get("details") or {}
    if "xnnpack" in d:
        return ", XNNPACK" if d["xnnpack"] else ", no XNNPACK"
    if "inference_precision" in d:
        return f", {d['inference_precision']}"
    return ""


def per_op_tables(results: list[BenchResult], top: int = 10) -> list[Table | str]:
    """Per artifact: time by op type, the slowest ops and their sum beside the p50; then, for
    each thread count with several artifacts, their op types side by side; then the notes."""
    out: list[Table | str] = []
    notes: list[str] = []
    for r in results:
        name = Path(r.artifact).name
        if r.per_op is None:
            if r.per_op_note:
                out.append(f"{name}: per-op timing unavailable — {r.per_op_note}")
            continue
        by_type = _time_by_type(r.per_op)
        total = sum(by_type.values()) or 1.0
        title = f"{name} threads {threads_label(r)}: time by op type"
        t = Table(title=title, title_justify="left", min_width=len(title))
        for c in ("op type", "ops", "ms", "share"):
            t.add_column(c, justify="left" if c == "op type" else "right")
        for kind, us in by_type.items():
            count = sum(op["type"] == kind for op in r.per_op)
            t.add_row(kind, str(count), f"{us / 1000:.3f}", f"{us / total:.1%}")
        out.append(t)
        s = Table(title=f"slowest {top} ops", title_justify="left")
        for c in ("op", "type", "runs on", "ms"):
            s.add_column(c, justify="right" if c == "ms" else "left")
        for op in sorted(r.per_op, key=lambda o: -o["time_us"])[:top]:
            s.add_row(op["name"][-60:], op["type"], op.get("exec_type") or "-", f"{op['time_us'] / 1000:.3f}")
        out.append(s)
        out.append(f"{name}: sum of the ops {total / 1000:.3f} ms; whole-model p50 {r.latency_ms['p50']:.3f} ms")
        if r.per_op_note and r.per_op_note not in notes:
            notes.append(r.per_op_note)
    out.extend(_side_by_side(results))
    return out + notes


def _time_by_type(ops: list[dict]) -> dict[str, float]:
    """op type -> total µs, slowest type first."""
    by_type: dict[str, float] = {}
    for op in ops:
        by_type[op["type"]] = by_type.get(op["type"], 0.0) + op["time_us"]
    return dict(sorted(by_type.items(), key=lambda kv: -kv[1]))


def _side_by_side(results: list[BenchResult]) -> list[Table]:
    tables = []
    for threads in dict.fromkeys(r.threads for r in results):
        rows = [r for r in results if r.threads == threads and r.per_op is not None]
        if len(rows) < 2:
            continue
        times = [_time_by_type(r.per_op) for r in rows]
        kinds = sorted({k for t in times for k in t}, key=lambda k: -max(t.get(k, 0.0) for t in times))
        t = Table(title=f"time by op type (ms), side by side, threads {threads or 'default'}",
                  title_justify="left")
        t.add_column("op type")
        for r in rows:
            t.add_column(Path(r.artifact).name, justify="right")
        for kind in kinds:
            t.add_row(kind, *(f"{tm[kind] / 1000:.3f}" if kind in tm else "-" for tm in times))
        t.add_row("sum of the ops", *(f"{sum(tm.values()) / 1000:.3f}" for tm in times), style="bold")
        t.add_row("whole-model p50", *(f"{r.latency_ms['p50']:.3f}" for r in rows), style="bold")
        tables.append(t)
    return tables


def _compared(results: list[BenchResult]) -> list[tuple[float | None, bool]]:
    """Per row, what the table shows beside it: speedup over its fp32, and whether it is the
    fastest of the rows it compares with."""
    ups, fast = speedups(results), set(fastest(results).values())
    return [(None if ups[i] is None else round(ups[i], 3), i in fast) for i in range(len(results))]


def to_json(results: list[BenchResult]) -> str:
    objs = []
    for r, (up, fast) in zip(results, _compared(results)):
        d = r.to_dict()
        obj = {k: d[k] for k in JSON_KEYS}
        obj.update(device=r.device, emulated=r.emulated, parity=r.parity, speedup_vs_fp32=up, fastest=fast)
        if r.per_op is not None:
            obj["per_op"] = r.per_op
        if r.extra.get("p50_rounds"):
            obj["p50_rounds"] = r.extra["p50_rounds"]
        objs.append(obj)
    return json.dumps(objs[0] if len(objs) == 1 else objs, indent=2)


def to_csv(results: list[BenchResult]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["device", "artifact", "backend", "precision", "threads", "runtime", "runtime_version",
                "load_ms", "first_inference_ms", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms",
                "max_ms", "std_ms", "throughput_fps", "peak_rss_mb", "size_bytes", "n",
                "top1_agreement", "speedup_vs_fp32", "fastest"])
    for r, (up, fast) in zip(results, _compared(results)):
        lat = r.latency_ms
        w.writerow([r.device, r.artifact, r.backend, r.precision, r.threads, r.runtime["name"],
                    r.runtime["version"], f"{r.load_ms:.3f}", f"{r.first_inference_ms:.3f}",
                    f"{lat['p50']:.4f}", f"{lat['p90']:.4f}", f"{lat['p99']:.4f}",
                    f"{lat['mean']:.4f}", f"{lat['min']:.4f}", f"{lat['max']:.4f}",
                    f"{lat['std']:.4f}", f"{r.throughput_fps:.2f}", f"{r.peak_rss_mb:.1f}",
                    r.size_bytes, r.n, (r.parity or {}).get("top1_agreement", ""),
                    "" if up is None else up, int(fast)])
    return buf.getvalue()


def write_outputs(results: list[BenchResult], json_path: Path | None, csv_path: Path | None) -> None:
    if json_path:
        write_text_atomic(json_path, to_json(results) + "\n")
    if csv_path:
        write_text_atomic(csv_path, to_csv(results))


def chart(results: list[BenchResult], path: Path) -> Path | None:
    """PNG scatter: p50 latency (x) vs top-1 agreement with the source model (y), one point per
    artifact and thread count. Drawn with Pillow (no plotting dependency)."""
    from PIL import Image, ImageDraw

    points = [(r, (r.parity or {}).get("top1_agreement")) for r in results]
    points = [(r, a) for r, a in points if isinstance(a, float)]
    if not points:
        return None
    W, H, L, B, T, R = 900, 560, 80, 60, 40, 240
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    xs = [r.latency_ms["p50"] for r, _ in points]
    ys = [a for _, a in points]
    x_max = max(xs) * 1.1
    y_min = min(0.8, min(ys) - 0.02)
    px = lambda x: L + (x / x_max) * (W - L - R)
    py = lambda y: H - B - (y - y_min) / (1.0 - y_min + 1e-9) * (H - B - T)
    d.line([(L, T), (L, H - B), (W - R, H - B)], fill="black", width=2)
    for i in range(6):
        xv = x_max * i / 5
        d.text((px(xv) - 10, H - B + 8), f"{xv:.2f}", fill="black")
        yv = y_min + (1.0 - y_min) * i / 5
        d.text((L - 50, py(yv) - 6), f"{yv:.1%}", fill="black")
    d.text(((W - R) / 2 - 60, H - 25), "p50 latency (ms)", fill="black")
    d.text((10, 10), "top-1 agreement with the source model", fill="black")
    colors = {b.name: b.color for b in backends()}
    for idx, (r, a) in enumerate(points):
        c = colors.get(r.backend, (100, 100, 100))  # a backend edgekit does not know
        x, y = px(r.latency_ms["p50"]), py(a)
        d.ellipse([x - 5, y - 5, x + 5, y + 5], fill=c)
        d.text((x + 7, y - 7), f"{r.precision} t{r.threads or 'd'}", fill=c)
    for i, (name, c) in enumerate(colors.items()):
        d.rectangle([W - R + 20, T + i * 22, W - R + 32, T + 12 + i * 22], fill=c)
        d.text((W - R + 40, T + i * 22), name, fill="black")
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path
