import csv
import io
import json
import re
import subprocess
import sys

import pytest
import yaml

from edgekit.bench import runner
from edgekit.bench.local import BenchResult, artifacts_in, bench
from edgekit.bench.report import JSON_KEYS, per_op_tables, speedups, table, to_csv, to_json
from edgekit.convert import convert

pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    target = tmp / "ort.yaml"
    target.write_text(yaml.safe_dump({
        "name": "ort", "description": "d", "cpu": {"arch": "x86_64", "cores": 2},
        "builds": [{"backend": "onnxruntime", "precisions": ["fp32", "int8"],
                    "activation_type": "uint8", "why": "test"}]}))
    convert(str(target), "mobilenet_v3_small", width=0.75, resolution=96, out=tmp / "out", calib_size=4, weights="random")
    return tmp / "out"


def cli(*args):
    return subprocess.run([sys.executable, "-m", "edgekit.cli.main", *args], capture_output=True,
                          text=True, timeout=600)


def test_single_artifact_json(build, tmp_path):
    out = cli("bench", str(build / "model_int8.onnx"), "--threads", "1", "-n", "30", "--warmup", "3",
              "--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv"))
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert set(JSON_KEYS) <= set(data)
    assert data["n"] == 30 and data["threads"] == 1 and data["precision"] == "int8"
    lat = data["latency_ms"]
    assert set(lat) == {"min", "mean", "p50", "p90", "p99", "max", "std"}
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert data["runtime"]["name"] == "onnxruntime" and data["peak_rss_mb"] > 10
    assert data["load_ms"] > 0 and data["first_inference_ms"] > 0
    assert (tmp_path / "r.csv").read_text().count("\n") == 2


def test_folder_threads_speedup_and_chart(build):
    results = bench(build, threads=[1, 2], iterations=10, warmup=2)
    assert [(r.precision, r.threads) for r in results] == [("fp32", 1), ("fp32", 2), ("int8", 1), ("int8", 2)]
    ups = speedups(results)
    assert ups[0] == 1.0 and ups[2] > 0
    assert results[2].parity["top1_agreement"] is not None  # carried from the manifest
    rows = json.loads(to_json(results))
    assert [row["speedup_vs_fp32"] for row in rows] == [round(ups[i], 3) for i in range(4)]
    for threads in (1, 2):  # the fastest row of each thread count, as the table's star
        pair = [row for row in rows if row["threads"] == threads]
        assert [row["fastest"] for row in pair] == [p is min(pair, key=lambda x: x["latency_ms"]["p50"])
                                                     for p in pair]
    csv_rows = list(csv.DictReader(io.StringIO(to_csv(results))))
    assert [float(row["speedup_vs_fp32"]) for row in csv_rows] == [row["speedup_vs_fp32"] for row in rows]
    out = cli("bench", str(build), "-n", "5", "--warmup", "1")
    assert out.returncode == 0, out.stderr
    assert (build / "bench.png").stat().st_size > 1000


def test_several_paths_interleaved_rounds(build, tmp_path):
    """Your build beside a reference model in one table; each row is the median of 3 rounds."""
    results = bench([build, build / "model_int8.onnx"], threads=[1], iterations=5, warmup=1, rounds=3)
    assert [(r.precision, r.artifact.endswith("model_int8.onnx")) for r in results] == \
        [("fp32", False), ("int8", True), ("int8", True)]
    for r in results:
        rounds = r.extra["p50_rounds"]
        assert len(rounds) == 3 and r.latency_ms["p50"] == sorted(rounds)[1]
    ups = speedups(results)
    assert ups[1] is not None and ups[2] is None  # the lone file has no fp32 of its own beside it
    spreads = [row for row in table(results).columns if row.header == "spread"][0].cells
    for r, cell in zip(results, spreads):
        p50s = r.extra["p50_rounds"]
        assert cell == f"{(max(p50s) - min(p50s)) / sorted(p50s)[1]:.0%}"
    out = cli("bench", str(build / "model_fp32.onnx"), str(build / "model_int8.onnx"), "-n", "5",
              "--rounds", "2", "--json", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr
    assert "median of 2 interleaved rounds" in " ".join(out.stdout.split())  # the title may wrap
    assert "spread" in out.stdout
    assert [d["precision"] for d in json.loads((tmp_path / "r.json").read_text())] == ["fp32", "int8"]
    out = cli("bench", str(build), str(build), "--emulate", "aarch64")
    assert out.returncode == 2 and "takes one PATH" in " ".join(out.stderr.split())


def test_duration_mode_and_per_op(build):
    [r] = bench(build / "model_fp32.onnx", threads=[1], duration=0.3, per_op=True)
    assert r.n >= 10
    assert {op["type"] for op in r.per_op} >= {"Conv"}
    *tables, caption = per_op_tables([r])
    total = sum(op["time_us"] for op in r.per_op) / 1000
    shown = re.fullmatch(r"model_fp32\.onnx: sum of the ops ([\d.]+) ms; whole-model p50 ([\d.]+) ms", caption)
    assert [float(x) for x in shown.groups()] == pytest.approx([total, r.latency_ms["p50"]], abs=1e-3)


def test_per_op_side_by_side(build):
    from rich.console import Console

    results = bench(build, threads=[1], iterations=3, warmup=1, per_op=True)
    *_, side = per_op_tables(results)
    console = Console(width=200, record=True)
    console.print(side)
    lines = console.export_text().splitlines()
    assert "model_fp32.onnx" in lines[2] and "model_int8.onnx" in lines[2]
    sums = next(line for line in lines if "sum of the ops" in line).split("│")[2:4]
    assert [float(x) for x in sums] == pytest.approx(
        [sum(op["time_us"] for op in r.per_op) / 1000 for r in results], abs=1e-3)  # 3 decimals shown
    assert any(line.startswith("│ Conv") or "│ QLinearConv" in line for line in lines)


def test_runner_reports_missing_runtime(monkeypatch, build):
    monkeypatch.setitem(runner.RUNTIMES, ".onnx", (("no_such_runtime_mod", "onnxruntime"),))
    with pytest.raises(runner.MissingRuntime, match="install one of onnxruntime"):
        runner.run({"artifact": str(build / "model_fp32.onnx")})


@pytest.mark.parametrize("args,message", [
    (["nope.onnx"], "artifact not found"),
    (["README.md"], "cannot benchmark README.md"),
    (["tests"], "no manifest.json and no"),
    (["x.onnx", "--threads", "0"], "thread counts must be >= 1"),
    (["x.onnx", "-n", "5", "--duration", "1"], "not both"),
])
def test_bad_input(args, message):
    out = cli("bench", *args)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_precision_of_an_unnamed_file_is_read_from_it(build, tmp_path):
    for name, precision in (("model_fp32.onnx", "fp32"), ("model_int8.onnx", "int8")):
        copy = tmp_path / f"theirs_{precision[-1]}.onnx"
        copy.write_bytes((build / name).read_bytes())
        assert artifacts_in(copy) == [(copy, "onnxruntime", precision, None)]


def test_googles_uint8_files_are_labelled_uint8(shared, tmp_path):
    quant = shared("models", "mobilenet_v2_1.0_224_quant.tflite")  # TF1 quantized: uint8 weights
    copy = tmp_path / "v2_quantized.tflite"  # the name does not say: read from the weights
    copy.write_bytes(quant.read_bytes())
    assert artifacts_in(copy)[0][1:3] == ("tflite", "uint8")
    v3 = shared("models", "mobilenet_v3_small_1.0_224.uint8.tflite")
    assert artifacts_in(v3)[0][1:3] == ("tflite", "uint8")
    ptq = shared("models", "tf2_mobilenet_v2_1.0_224_ptq.tflite")  # int8 inside, uint8 input
    assert artifacts_in(ptq)[0][1:3] == ("tflite", "int8")


def _result(name, p50, threads=None, group="", runtime_threads=None, device="local"):
    details = {} if runtime_threads is None else {"threads": runtime_threads}
    return BenchResult(artifact=name, backend="tflite", precision="fp32", threads=threads,
                       runtime={"name": "ai-edge-litert", "version": "x", "details": details},
                       load_ms=1.0, first_inference_ms=1.0,
                       latency_ms={k: p50 for k in ("min", "mean", "p50", "p90", "p99", "max", "std")},
                       throughput_fps=1.0, peak_rss_mb=1.0, size_bytes=1, n=1, device=device, group=group)


def _artifact_cells(t):
    return list(next(c for c in t.columns if c.header == "artifact").cells)


def test_fastest_is_marked_among_single_files_side_by_side():
    results = [_result("a.tflite", 2.0, 1, group="a.tflite"), _result("b.tflite", 1.0, 1, group="b.tflite")]
    t = table(results)
    assert _artifact_cells(t) == ["a.tflite", "b.tflite *"]
    assert t.caption.startswith("* fastest per thread count")


def test_no_legend_when_no_row_is_marked():
    results = [_result("a.tflite", 2.0, 1), _result("a.tflite", 1.0, 2)]  # one file, two thread counts
    t = table(results)
    assert not any(cell.endswith("*") for cell in _artifact_cells(t))
    assert "fastest" not in t.caption
    # different runtime defaults (2 threads vs 1) do not compare either
    t = table([_result("a.xml", 1.0, group="a.xml", runtime_threads=2),
               _result("b.tflite", 2.0, group="b.tflite", runtime_threads=1)])
    assert "fastest" not in t.caption


def test_threads_column_shows_the_default_used():
    t = table([_result("a.tflite", 1.0, runtime_threads=1), _result("b.onnx", 1.0)])
    assert list(next(c for c in t.columns if c.header == "thr").cells) == ["1", "default"]


def test_executed_nodes_skip_ops_a_delegate_took_over():
    # three ops 0 -> 1 -> 2 (tensors 0..3), then one DELEGATE node that replaced ops 0 and 1
    nodes = [{"index": 0, "inputs": [0], "outputs": [1]}, {"index": 1, "inputs": [1], "outputs": [2]},
             {"index": 2, "inputs": [2], "outputs": [3]}, {"index": 3, "inputs": [0], "outputs": [2]}]
    assert runner.executed_nodes(nodes, [3]) == [2, 3]
    assert runner.executed_nodes(nodes[:3], [3]) == [0, 1, 2]  # no delegate: every op runs


def test_fully_delegated_model_runs_one_node(shared):
    pytest.importorskip("ai_edge_litert", reason="needs the 'tflite' extra")
    path = shared("models", "vww_96_float.tflite")  # 31 ops, all in one XNNPACK partition
    details = runner.run({"artifact": str(path), "iterations": 2, "warmup": 0})["runtime"]["details"]
    assert details["delegate_partitions"] == 1 and details["model_ops"] == 31
    assert details["ops_after_delegation"] == 1
    assert details["threads"] == 1  # ai-edge-litert's default


@pytest.mark.parametrize("suffix,module,kind", [
    (".tflite", "ai_edge_litert", "TFLite model"),
    (".onnx", "onnxruntime", "ONNX model"),
    (".xml", "openvino", "OpenVINO IR model"),
])
def test_corrupt_artifact_is_bad_input(tmp_path, suffix, module, kind):
    pytest.importorskip(module, reason=f"needs {module}")
    fake = tmp_path / f"fake{suffix}"
    fake.write_text("hello, I am a text file\n")
    out = cli("bench", str(fake), "-n", "2")
    assert out.returncode == 2, out.stderr
    errors = [line for line in out.stderr.splitlines() if not line.startswith("bench:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: fake{suffix} is not a valid {kind}: ")


def test_ov_precision_on_other_artifacts_warns(shared):
    pytest.importorskip("ai_edge_litert", reason="needs the 'tflite' extra")
    path = shared("models", "vww_96_float.tflite")
    said = []
    bench(path, iterations=2, warmup=0, ov_precision="f16", progress=said.append)
    assert said[0] == ("--ov-precision applies only to OpenVINO artifacts (.xml): ignored for "
                       "vww_96_float.tflite")


# ---------------------------------------------------------------------------------------------
# Using a build: thread bounds, outputs that would overwrite inputs, the manifest's sha256


def test_thread_count_is_bounded_before_anything_runs(tmp_path):
    """100000 started ~8,900 threads (16 GB). A missing file: the old code fails on it, safely."""
    import time

    from edgekit.errors import InputError

    t0 = time.monotonic()
    out = cli("bench", str(tmp_path / "x.onnx"), "--threads", "1,100000")
    assert out.returncode == 2 and "threads 100000 is more than" in out.stderr
    assert "Traceback" not in out.stderr and time.monotonic() - t0 < 60
    with pytest.raises(InputError, match="is more than"):
        bench(tmp_path / "x.onnx", threads=[100000])
    # the runner (also on a device) checks against its own machine's cores, before any interpreter
    with pytest.raises(runner.BadInput, match="threads 100000 is not in 1"):
        runner.run({"artifact": str(tmp_path / "x.onnx"), "threads": 100000})


def _copy_build(build, tmp_path):
    import shutil

    return shutil.copytree(build, tmp_path / "build")


@pytest.mark.parametrize("option,target", [
    ("--json", "model_int8.onnx"), ("--csv", "manifest.json"), ("--json", "notes.txt"),
    ("--json", "link-to-artifact.json")])
def test_outputs_never_overwrite_a_build(build, tmp_path, option, target):
    folder = _copy_build(build, tmp_path)
    (folder / "notes.txt").write_text("mine")
    (folder / "link-to-artifact.json").symlink_to(folder / "model_int8.onnx")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    out = cli("bench", str(folder), "-n", "3", "--warmup", "0", option, str(folder / target))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "would overwrite the input" in out.stderr or "inside the build folder" in out.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_json_and_csv_on_one_file_or_onto_the_artifact_benchmarked(build, tmp_path):
    same = tmp_path / "r.out"
    out = cli("bench", str(build / "model_int8.onnx"), "--json", str(same), "--csv", str(same))
    assert out.returncode == 2 and "is also --json" in out.stderr and not same.exists()
    theirs = tmp_path / "theirs.onnx"
    theirs.write_bytes((build / "model_int8.onnx").read_bytes())
    out = cli("bench", str(theirs), "--json", str(theirs))
    assert out.returncode == 2 and "would overwrite the input" in out.stderr
    assert theirs.read_bytes() == (build / "model_int8.onnx").read_bytes()


def test_bench_json_and_chart_in_the_build_are_allowed(build, tmp_path):
    folder = _copy_build(build, tmp_path)
    out = cli("bench", str(folder), "-n", "3", "--warmup", "0", "--json", str(folder / "bench.json"))
    assert out.returncode == 0, out.stderr
    assert (folder / "bench.json").is_file() and (folder / "bench.png").is_file()
    out = cli("bench", str(folder / "model_int8.onnx"), "-n", "3", "--warmup", "0", "--json",
              str(folder / "bench.json"))  # the file the demo reads its timings from
    assert out.returncode == 0, out.stderr


def test_tampered_artifact_is_refused_unless_no_verify(build, tmp_path):
    folder = _copy_build(build, tmp_path)
    (folder / "model_int8.onnx").write_bytes((folder / "model_fp32.onnx").read_bytes())
    for target in (folder, folder / "model_int8.onnx"):
        out = cli("bench", str(target), "-n", "3", "--warmup", "0", "--no-chart")
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert "model_int8.onnx does not match the sha256 in" in out.stderr and "--no-verify" in out.stderr
        assert "threads default" not in out.stderr  # nothing was benchmarked
    out = cli("bench", str(folder), "-n", "3", "--warmup", "0", "--no-chart", "--no-verify")
    assert out.returncode == 0, out.stderr


def test_missing_artifact_fails_before_benchmarking_any(build, tmp_path):
    folder = _copy_build(build, tmp_path)
    (folder / "model_int8.onnx").unlink()
    out = cli("bench", str(folder), "-n", "3", "--warmup", "0", "--no-chart")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "model_int8.onnx is missing (listed in" in out.stderr
    assert "model_fp32.onnx (onnxruntime fp32)" not in out.stderr  # not benchmarked, then lost
