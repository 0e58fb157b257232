"""Standalone latency runner: numpy + one runtime, no edgekit imports.

The same file runs locally (in a fresh process, so peak memory is the inference's own), is
copied to devices over SSH, and runs under qemu for `bench --emulate`. Usage:
    python runner.py '{"artifact": "model.tflite", "threads": 2, "warmup": 10,
                       "iterations": 100, "duration": null, "per_op": false}'
With "inputs": "in.npy" and "outputs": "out.npy" it runs no benchmark: it feeds each prepared
input (N x the model's input shape, its own dtype) once and saves the raw outputs (N x output).
Prints one JSON object on stdout; on failure prints {"error": "..."} and exits 3 (missing
runtime), 2 (the runtime cannot read the artifact, or more threads than this machine takes) or 1.
"""
from __future__ import annotations

import json
import os
import platform
import re
import resource
import sys
import time

RUNTIMES = {
    ".tflite": (("ai_edge_litert", "ai-edge-litert"), ("tflite_runtime", "tflite-runtime")),
    ".onnx": (("onnxruntime", "onnxruntime"),),
    ".xml": (("openvino", "openvino"),),
    ".pte": (("executorch.runtime", "executorch"),),
}


# TFLite per-op timing: single ops take microseconds, so many runs cost little and steady the medians
TFLITE_OP_RUNS, TFLITE_OP_PASSES, TFLITE_OP_WARMUP = 50, 5, 2


FORMATS = {".tflite": "TFLite model", ".onnx": "ONNX model", ".xml": "OpenVINO IR model",
           ".pte": "ExecuTorch program"}
# onnxruntime's exception types that mean "this file is not a model it can read"
ORT_UNREADABLE = ("InvalidProtobuf", "InvalidGraph", "InvalidArgument", "NoModel")


class MissingRuntime(Exception):
    pass


class InvalidModel(Exception):
    """The runtime cannot parse the artifact: bad input, not a failure of the benchmark."""


class BadInput(Exception):
    """A setting this machine cannot honour (too many threads): the user's input."""


# edgekit.limits' bound, repeated here (no edgekit imports): checked against this machine's cores
THREADS_PER_CORE, MIN_THREAD_CAP = 4, 16


def _check_threads(threads):
    if threads is None:
        return None
    cores = os.cpu_count() or 1
    cap = max(MIN_THREAD_CAP, THREADS_PER_CORE * cores)
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= cap:
        raise BadInput(f"threads {threads!r} is not in 1..{cap} ({THREADS_PER_CORE} per core for the "
                       f"{cores} cores of {platform.node() or 'this machine'}, at least {MIN_THREAD_CAP})")
    return threads


def _reason(exc: Exception) -> str:
    """The informative line of a runtime's error, without OpenVINO's "Exception from <source>"
    lines and list of frontends or onnxruntime's "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : "."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Exception from")] or [type(exc).__name__]
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", lines[0]).split(" Available frontends")[0]


def _rss_mb() -> float:
    """Peak resident memory of this process. Linux: VmHWM, because ru_maxrss survives exec and
    would report the parent's footprint at fork time."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)


def _import_runtime(suffix: str):
    import importlib

    tried = []
    for module, package in RUNTIMES[suffix]:
        try:
            return importlib.import_module(module), package
        except ImportError:
            tried.append(package)
    raise MissingRuntime(f"no runtime for {suffix} files: install one of {', '.join(tried)}"
                         + (" (tflite-runtime needs numpy<2)" if suffix == ".tflite" else ""))


def _random_input(np, shape, dtype):
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


class TFLiteModel:
    def __init__(self, path, threads, module, package):
        import numpy as np

        interpreter_mod = module.interpreter if hasattr(module, "interpreter") else \
            __import__(f"{module.__name__}.interpreter", fromlist=["Interpreter"])
        try:
            self.interpreter = interpreter_mod.Interpreter(model_path=path, num_threads=threads)
        except ValueError as exc:  # "The model is not a valid Flatbuffer buffer"
            raise InvalidModel(_reason(exc)) from exc
        self.interpreter.allocate_tensors()
        detail = self.interpreter.get_input_details()[0]
        self.input_index = detail["index"]
        outputs = self.interpreter.get_output_details()
        self.output_index = outputs[0]["index"]
        self.input = _random_input(np, tuple(detail["shape"]), detail["dtype"])
        nodes = self.interpreter._get_ops_details()
        names = [op["op_name"] for op in nodes]
        version = getattr(module, "__version__", None) or _dist_version(package)
        self.runtime = {"name": package, "version": version,
                        "details": {"xnnpack": "DELEGATE" in names,
                                    "delegate_partitions": names.count("DELEGATE"),
                                    "threads": threads or _tflite_default_threads(package),
                                    "model_ops": len(names) - names.count("DELEGATE"),
                                    "ops_after_delegation": len(executed_nodes(
                                        nodes, [d["index"] for d in outputs]))}}
        self.path, self.threads, self.interpreter_mod = path, threads, interpreter_mod
        self.per_op_note = None

    def set_input(self, x):
        self.input = x

    def infer(self):
        self.interpreter.set_tensor(self.input_index, self.input)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index)

    def per_op(self, runs, op_models=None):
        """LiteRT's Python API has no op profiler, so each op of the main graph runs alone: in a
        one-op model of its own (same tensors, weights, threads and delegate; split_ops),
        ``runs`` (at least 50) times, median per op. Ops alone miss their neighbours' warm caches
        and pay a whole invoke each: the report sets their sum beside the whole model's p50.
        ``op_models``: the split made elsewhere (for a device whose runtime has no schema), as
        {"ops": [{"file", "name", "type"}], "weight_ops": [...]}."""
        import numpy as np

        if op_models is None:
            try:
                ops, weight_ops = split_ops(self.path)
            except ImportError:
                self.per_op_note = ("per-op timing splits the model with ai-edge-litert's flatbuffer "
                                    "schema: pip install ai-edge-litert")
                return None
            except Exception as exc:  # a file the interpreter runs but the schema cannot split
                self.per_op_note = f"could not split the model into ops: {type(exc).__name__}: {exc}"
                return None
        else:
            ops, weight_ops = [], op_models["weight_ops"]
            for entry in op_models["ops"]:
                with open(entry["file"], "rb") as f:
                    ops.append({"name": entry["name"], "type": entry["type"], "content": f.read()})
        timed, failed = [], []
        for row in ops:
            try:
                alone = self._op_interpreter(row["content"], np)
            except Exception:  # an op that cannot stand alone (control flow, a custom op's resolver)
                failed.append(row["type"])
                continue
            delegated = any(o["op_name"] == "DELEGATE" for o in alone._get_ops_details())
            timed.append({**row, "exec_type": "XNNPACK" if delegated else "LiteRT kernel", "samples": []})
            del alone
        # A few passes over all ops, each op several times in a row (its thread pool awake, as the
        # whole model's is between ops) so that a slow spell hits every op alike. One interpreter
        # at a time: an idle one's pool still spinning would take a core from the next.
        per_pass = -(-max(runs, TFLITE_OP_RUNS) // TFLITE_OP_PASSES)
        for _ in range(TFLITE_OP_PASSES):
            for row in timed:
                alone = self._op_interpreter(row["content"], np)
                for i in range(TFLITE_OP_WARMUP + per_pass):
                    t0 = time.perf_counter_ns()
                    alone.invoke()
                    if i >= TFLITE_OP_WARMUP:
                        row["samples"].append(time.perf_counter_ns() - t0)
                del alone
        self.per_op_note = ("LiteRT has no op profiler here: each op was timed alone, in a one-op "
                            "model with the same threads and delegate")
        if weight_ops:
            self.per_op_note += (f"; {len(weight_ops)} op(s) that only prepare weights "
                                 f"({', '.join(sorted(set(weight_ops)))}) ran inside the ops they feed")
        if failed:
            self.per_op_note += f"; {len(failed)} op(s) could not run alone: {', '.join(sorted(set(failed)))}"
        return [{"name": r["name"], "type": r["type"], "exec_type": r["exec_type"],
                 "time_us": float(np.median(r["samples"])) / 1e3} for r in timed]

    def _op_interpreter(self, content, np):
        alone = self.interpreter_mod.Interpreter(model_content=content, num_threads=self.threads)
        alone.allocate_tensors()
        for d in alone.get_input_details():
            alone.set_tensor(d["index"], _random_input(np, tuple(d["shape"]), d["dtype"]))
        alone.invoke()
        return alone


def _tflite_default_threads(package):
    """ai-edge-litert's Interpreter runs ``num_threads or 1`` threads; tflite-runtime leaves the
    choice to the runtime (-1), which it does not report."""
    return 1 if package == "ai-edge-litert" else None


def executed_nodes(nodes, output_tensors):
    """The nodes that run after delegation. ``_get_ops_details()`` lists every op of the model and
    then one DELEGATE node per partition; the ops a delegate took over stay in the list but do not
    run. Walk back from the outputs through each tensor's producer, a DELEGATE node's outputs
    replacing those of the ops it took over: the ops inside a partition are never reached."""
    by_index = {node["index"]: node for node in nodes}
    producer = {}
    for node in sorted(nodes, key=lambda n: n["index"]):  # DELEGATE nodes come last and win
        for t in node["outputs"]:
            producer[int(t)] = node["index"]
    seen, todo = set(), [producer[int(t)] for t in output_tensors if int(t) in producer]
    while todo:
        index = todo.pop()
        if index not in seen:
            seen.add(index)
            todo.extend(producer[int(t)] for t in by_index[index]["inputs"] if int(t) in producer)
    return sorted(seen)


def split_ops(path):
    """The main graph of the .tflite at ``path`` as one-op models: ([{"name", "type", "content"}],
    types of the ops that only prepare weights, which stay with the op they feed). Needs
    ai-edge-litert's flatbuffer schema (ImportError without it)."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    with open(path, "rb") as f:
        model = fbu.read_model_from_bytearray(bytearray(f.read()))
    graph = model.subgraphs[0]
    op_names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    producers = _constant_producers(model)
    ops, weight_ops = [], []
    for k, op in enumerate(graph.operators):
        code = model.operatorCodes[op.opcodeIndex]
        kind = code.customCode.decode() if code.customCode else \
            op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")
        if op.outputs is not None and all(producers.get(i) is op for i in op.outputs):
            weight_ops.append(kind)  # prepared once at load, inside the ops they feed
            continue
        shapes = [graph.tensors[i].shape for i in (op.inputs[0], op.outputs[0]) if i >= 0]
        ops.append({"name": f"#{k} " + " -> ".join("x".join(map(str, sh)) for sh in shapes), "type": kind,
                    "content": bytes(fbu.convert_object_to_bytearray(one_op_model(fb, model, op, producers)))})
    return ops, weight_ops


def _constant_producers(model):
    """tensor -> the op computing it from constants alone (DEQUANTIZE of fp16 weights, DENSIFY):
    a one-op model keeps that op, so its weights stay static, as in the whole model."""
    graph = model.subgraphs[0]

    def constant(i):
        data = model.buffers[graph.tensors[i].buffer].data
        return i < 0 or (data is not None and len(data) > 0)

    return {out: op for op in graph.operators if op.inputs is not None and all(map(constant, op.inputs))
            for out in op.outputs}


def one_op_model(fb, model, op, producers=None):
    """A model holding ``op`` alone (with the ops that compute its weights from constants): its
    tensors (weights with their buffers), inputs that have no data become the model's inputs,
    its outputs the model's outputs."""
    import copy

    graph = model.subgraphs[0]
    small = fb.ModelT()
    small.version = model.version
    small.operatorCodes, small.buffers = [], [fb.BufferT()]
    sub = fb.SubGraphT()
    sub.tensors, sub.inputs, sub.operators = [], [], []
    remap = {-1: -1}

    def take(index, is_input):
        if index not in remap:
            tensor = copy.copy(graph.tensors[index])
            buffer = model.buffers[tensor.buffer]
            if buffer.data is not None and len(buffer.data):
                small.buffers.append(buffer)
                tensor.buffer = len(small.buffers) - 1
            else:
                tensor.buffer = 0
                if is_input:
                    sub.inputs.append(len(sub.tensors))
            sub.tensors.append(tensor)
            remap[index] = len(sub.tensors) - 1
        return remap[index]

    def add(original):
        code = model.operatorCodes[original.opcodeIndex]
        if code not in small.operatorCodes:
            small.operatorCodes.append(code)
        copied = copy.copy(original)
        copied.opcodeIndex = small.operatorCodes.index(code)
        copied.inputs = [take(i, True) for i in original.inputs]
        copied.outputs = [take(i, False) for i in original.outputs]
        if original.intermediates is not None:
            copied.intermediates = [take(i, False) for i in original.intermediates]
        sub.operators.append(copied)
        return copied

    for i in op.inputs:
        if producers and i in producers and producers[i] is not op:
            add(producers[i])
    sub.outputs = list(add(op).outputs)
    small.subgraphs = [sub]
    return small


class OnnxModel:
    # set by run_paired: every session of the process runs on one global pool
    shared_pool = False

    def __init__(self, path, threads, module, package, profile=False, profile_dir=None):
        import numpy as np

        ort = module
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if OnnxModel.shared_pool:
            opts.use_per_session_threads = False
        else:
            opts.inter_op_num_threads = 1
            if threads:
                opts.intra_op_num_threads = threads
        if profile:
            opts.enable_profiling = True
            opts.profile_file_prefix = os.path.join(profile_dir or ".", "edgekit_ort_profile")
        try:
            self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            if type(exc).__name__ in ORT_UNREADABLE:
                raise InvalidModel(_reason(exc)) from exc
            raise
        inp = self.session.get_inputs()[0]
        dtype = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8,
                 "tensor(int8)": np.int8}.get(inp.type, np.float32)
        shape = tuple(d if isinstance(d, int) else 1 for d in inp.shape)
        self.feed = {inp.name: _random_input(np, shape, dtype)}
        self.runtime = {"name": "onnxruntime", "version": ort.__version__,
                        "details": {"providers": self.session.get_providers(),
                                    "intra_op_threads": threads or "default",
                                    "thread_pool": "global" if OnnxModel.shared_pool else "per session"}}
        self.path, self.threads, self.module = path, threads, module

    def set_input(self, x):
        self.feed = {next(iter(self.feed)): x}

    def infer(self):
        return self.session.run(None, self.feed)[0]

    def per_op(self, runs):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            prof = OnnxModel(self.path, self.threads, self.module, "onnxruntime", True, tmp)
            for _ in range(runs):
                prof.infer()
            trace = prof.session.end_profiling()
            with open(trace) as f:
                events = json.load(f)
        rows = {}
        for e in events:
            if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
                name = e["name"][: -len("_kernel_time")]
                row = rows.setdefault(name, {"name": name, "type": e["args"].get("op_name", "?"),
                                             "total_us": 0.0, "count": 0})
                row["total_us"] += e["dur"]
                row["count"] += 1
        return [{"name": r["name"], "type": r["type"], "time_us": r["total_us"] / max(1, runs)}
                for r in rows.values()]


class OpenVINOModel:
    def __init__(self, path, threads, module, package, precision=None):
        import numpy as np

        ov = self.ov = module
        self.core = ov.Core()
        try:
            self.model = self.core.read_model(path)
        except RuntimeError as exc:  # reading only parses the IR: compile errors are not caught here
            raise InvalidModel(_reason(exc)) from exc
        self.config = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = threads
        if precision:
            self.config["INFERENCE_PRECISION_HINT"] = precision
        self.compiled = self.core.compile_model(self.model, "CPU", self.config)
        self.request = self.compiled.create_infer_request()
        port = self.compiled.input(0)
        dtype = np.dtype(port.get_element_type().to_dtype())
        self.input = _random_input(np, tuple(port.get_shape()), dtype)
        # Bind the input once, as benchmark_app does: infer() then times the inference alone.
        self.request.set_input_tensor(ov.Tensor(self.input))
        self.runtime = {"name": "openvino", "version": ov.__version__.split("-")[0],
                        "details": {
                            "device": "CPU",
                            "inference_precision": _type_name(self.compiled.get_property("INFERENCE_PRECISION_HINT")),
                            "threads": int(self.compiled.get_property("INFERENCE_NUM_THREADS")),
                            "performance_hint": str(self.compiled.get_property("PERFORMANCE_HINT"))}}

    def set_input(self, x):
        self.input = x
        self.request.set_input_tensor(self.ov.Tensor(x))

    def infer(self):
        self.request.infer()
        return self.request.get_output_tensor(0).data

    def per_op(self, runs):
        compiled = self.core.compile_model(self.model, "CPU", {**self.config, "PERF_COUNT": True})
        request = compiled.create_infer_request()
        totals = {}
        for _ in range(runs):
            request.infer({0: self.input})
            for info in request.profiling_info:
                if info.status.name != "EXECUTED":
                    continue
                row = totals.setdefault(info.node_name, {"name": info.node_name, "type": info.node_type,
                                                         "exec_type": info.exec_type, "time_us": 0.0})
                row["time_us"] += info.real_time.total_seconds() * 1e6 / runs
        return list(totals.values())


class ExecuTorchModel:
    """A .pte program on ExecuTorch's runtime. Every program of a process runs on one global
    thread pool, sized before the first program loads: a program loaded before a resize aborts
    the process when it runs (so paired mode, one thread count for all, loads after sizing it)."""

    def __init__(self, path, threads, module, package):
        import warnings

        import numpy as np

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "This API is experimental"
            from executorch.extension.pybindings import portable_lib
            from executorch.runtime import Runtime
        import torch

        default = int(portable_lib._threadpool_get_thread_count())
        if threads and threads != default:
            portable_lib._unsafe_reset_threadpool(int(threads))
        runtime = Runtime.get()
        try:
            self.program = runtime.load_program(path)
        except Exception as exc:  # "Failed to load program": not a .pte this runtime reads
            raise InvalidModel(_reason(exc)) from exc
        self.method = self.program.load_method("forward")
        meta = self.method.metadata
        spec = meta.input_tensor_meta(0)
        dtypes = {0: np.uint8, 1: np.int8, 6: np.float32}
        self.torch = torch
        self.input = _random_input(np, tuple(spec.sizes()), dtypes.get(int(spec.dtype()), np.float32))
        self._tensor = torch.from_numpy(self.input)
        with open(path, "rb") as f:  # the delegate's id is a string in the program's flatbuffer
            names_xnnpack = b"XnnpackBackend" in f.read()
        backends = runtime.backend_registry.registered_backend_names
        self.runtime = {"name": "executorch", "version": _dist_version(package),
                        "details": {"xnnpack": names_xnnpack and "XnnpackBackend" in backends,
                                    "threads": int(portable_lib._threadpool_get_thread_count()),
                                    "default_threads": default, "backends": backends}}
        self.per_op_note = None

    def set_input(self, x):
        self.input = x
        self._tensor = self.torch.from_numpy(x)

    def infer(self):
        return self.method.execute([self._tensor])[0].numpy()

    def per_op(self, runs):
        """ExecuTorch's op timings come from its event tracer (ETDump), which the PyPI wheel is
        built without: say so instead of timing."""
        self.per_op_note = ("ExecuTorch per-op timing needs a runtime built with its event tracer "
                            "(EXECUTORCH_ENABLE_EVENT_TRACER); the PyPI wheel has none")
        return None


def _type_name(value):
    """OpenVINO element type -> "f32" / "bf16" (str() gives "<Type: 'float32'>")."""
    name = getattr(value, "get_type_name", None)
    return name() if callable(name) else str(value)


def _dist_version(package):
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:
        return "unknown"


def _stats(samples_ms):
    import numpy as np

    a = np.asarray(samples_ms)
    return {"min": float(a.min()), "mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
            "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max()), "std": float(a.std())}


def _host() -> dict:
    return {"machine": platform.machine(), "python": platform.python_version(),
            "cpu_count": os.cpu_count()}


def _save_outputs(model, config: dict, path: str, threads, load_ms: float) -> dict:
    """Outputs mode: each prepared input once, raw outputs saved (no warmup, no timing loop)."""
    import numpy as np

    inputs = np.load(config["inputs"])
    outputs = []
    t0 = time.perf_counter_ns()
    for x in inputs:
        model.set_input(np.ascontiguousarray(x))
        outputs.append(np.array(model.infer(), copy=True))
    seconds = (time.perf_counter_ns() - t0) / 1e9
    np.save(config["outputs"], np.stack(outputs))
    return {"artifact": path, "threads": threads, "runtime": model.runtime, "n": len(outputs),
            "output_dtype": str(outputs[0].dtype), "load_ms": load_ms,
            "inference_seconds": seconds, "host": _host()}


def _load(path: str, threads, ov_precision=None):
    """(model, load ms) for one artifact in this process."""
    suffix = os.path.splitext(path)[1]
    if suffix not in RUNTIMES:
        raise ValueError(f"unsupported artifact {path}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"artifact not found: {path}")
    module, package = _import_runtime(suffix)
    cls = {".tflite": TFLiteModel, ".onnx": OnnxModel, ".xml": OpenVINOModel, ".pte": ExecuTorchModel}[suffix]
    extra = {"precision": ov_precision} if suffix == ".xml" and ov_precision else {}
    t0 = time.perf_counter_ns()
    try:
        model = cls(path, threads, module, package, **extra)
    except InvalidModel as exc:
        raise InvalidModel(f"{os.path.basename(path)} is not a valid {FORMATS[suffix]}: {exc}") from None
    return model, (time.perf_counter_ns() - t0) / 1e6


def _share_onnxruntime_pool(paths, threads) -> None:
    """ONNX Runtime sessions sharing one global thread pool. Each session's own pool keeps
    spinning after its run and takes a core from the next session's: measured here, per-session
    pools doubled the fp32 MobileNetV2's p50 (7.4 vs 3.1 ms alone) and put int8/fp32 at 0.43
    instead of 0.65; on one global pool both ran as fast as alone."""
    if not any(os.path.splitext(p)[1] == ".onnx" for p in paths):
        return
    ort, _ = _import_runtime(".onnx")
    if hasattr(ort, "set_global_thread_pool_sizes"):  # onnxruntime >= 1.21 in Python
        ort.set_global_thread_pool_sizes(threads or 0, 1)
        OnnxModel.shared_pool = True


def run_paired(config: dict) -> dict:
    """Every artifact loaded in this one process, then single invocations alternated in a rotating
    order (A B, B A, ... for two), so that the machine's slow spells hit each artifact alike; the
    raw samples go back for the ratio's confidence interval."""
    threads = _check_threads(config.get("threads"))
    paths = list(config["paired"])
    if len(paths) < 2:
        raise BadInput("a paired benchmark needs at least two artifacts")
    pairs = int(config.get("pairs") or 1000)
    if not 1 <= pairs <= 1_000_000:
        raise BadInput(f"pairs must be between 1 and 1000000, not {pairs}")
    _share_onnxruntime_pool(paths, threads)
    models, loads, loaded = [], [], {}
    for path in paths:
        # one session per file: the same file named twice is the same model (two sessions of one
        # model differed by up to 7% here under load, an effect of where their buffers landed)
        key = os.path.realpath(path)
        if key not in loaded:
            loaded[key] = _load(path, threads, config.get("ov_precision"))
        model, load_ms = loaded[key]
        models.append(model)
        loads.append(load_ms)
    for model in models:
        for _ in range(int(config.get("warmup", 10)) + 1):
            model.infer()
    samples = [[] for _ in models]
    k = len(models)
    for i in range(pairs):
        for j in [(i + r) % k for r in range(k)]:
            t0 = time.perf_counter_ns()
            models[j].infer()
            samples[j].append((time.perf_counter_ns() - t0) / 1e6)
    return {"paired": True, "threads": threads, "pairs": pairs, "host": _host(), "peak_rss_mb": _rss_mb(),
            "results": [{"artifact": path, "runtime": model.runtime, "load_ms": load_ms,
                         "latency_ms": _stats(s), "samples_ms": [round(x, 5) for x in s]}
                        for path, model, load_ms, s in zip(paths, models, loads, samples)]}


def run(config: dict) -> dict:
    if config.get("paired"):
        return run_paired(config)
    path = config["artifact"]
    threads = _check_threads(config.get("threads"))  # before any interpreter exists
    suffix = os.path.splitext(path)[1]
    if suffix in RUNTIMES and not os.path.isfile(path):
        raise FileNotFoundError(f"artifact not found: {path}")
    rss_before = _rss_mb()
    if suffix in RUNTIMES:
        _import_runtime(suffix)
    rss_runtime = _rss_mb()
    model, load_ms = _load(path, threads, config.get("ov_precision"))
    if config.get("inputs"):
        return _save_outputs(model, config, path, threads, load_ms)
    t0 = time.perf_counter_ns()
    model.infer()
    first_ms = (time.perf_counter_ns() - t0) / 1e6
    for _ in range(int(config.get("warmup", 10))):
        model.infer()
    iterations = config.get("iterations")
    duration = config.get("duration")
    if not iterations and not duration:
        iterations = 100
    samples = []
    deadline = time.perf_counter_ns() + int(duration * 1e9) if duration else None
    min_runs = int(config.get("min_iterations", 10))
    while True:
        t0 = time.perf_counter_ns()
        model.infer()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
        if iterations and len(samples) >= iterations:
            break
        if deadline and time.perf_counter_ns() >= deadline and len(samples) >= min_runs:
            break
    stats = _stats(samples)
    result = {
        "artifact": path, "threads": threads, "runtime": model.runtime,
        "load_ms": load_ms, "first_inference_ms": first_ms, "latency_ms": stats,
        "throughput_fps": 1000.0 / stats["mean"], "peak_rss_mb": _rss_mb(),
        "rss_before_runtime_mb": rss_before, "rss_runtime_imported_mb": rss_runtime,
        "size_bytes": os.path.getsize(path) + (os.path.getsize(path[:-4] + ".bin")
                                               if suffix == ".xml" and os.path.exists(path[:-4] + ".bin") else 0),
        "n": len(samples), "host": _host(),
    }
    if config.get("per_op"):
        extra = {"op_models": config["op_models"]} if config.get("op_models") else {}
        result["per_op"] = model.per_op(int(config.get("per_op_runs", 20)), **extra)
        if getattr(model, "per_op_note", None):
            result["per_op_note"] = model.per_op_note
    return result


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        config = json.loads(argv[0])
        result = run(config)
    except MissingRuntime as exc:
        print(json.dumps({"error": str(exc), "kind": "missing_runtime"}))
        return 3
    except InvalidModel as exc:
        print(json.dumps({"error": str(exc).splitlines()[0], "kind": "invalid_model"}))
        return 2
    except BadInput as exc:
        print(json.dumps({"error": str(exc), "kind": "bad_input"}))
        return 2
    except Exception as exc:  # report, don't trace: the caller prints one line
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
