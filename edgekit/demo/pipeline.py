"""The live pipeline: capture -> preprocess -> inference -> overlay (+ window, JSON lines) -> record.

Threads and hand-overs::

    capture thread ──frames──> inference thread ──results──> main thread ──annotated──> recorder
    (decode; + preprocess       (preprocess for live         (overlay, JSON line,        (VideoWriter
     for files)                  sources; Session.infer)      window and keys)            encode)

Each stage runs in its own thread, so the frame rate is set by the slowest stage rather than by
the sum of all of them. For live sources the capture hand-over keeps only the newest frame (stale
frames are dropped and counted); for files every frame goes through in order, with back-pressure.

Keys in the window: q or Esc quit, space pauses, s saves a PNG snapshot. Ctrl-C (or SIGTERM) stops
cleanly: threads wind down, the video is finalised, the summary is printed; a second Ctrl-C stops
at once (the video is still closed properly).

``EDGEKIT_DEMO_KEYS`` (e.g. ``"s,q"``) feeds key presses to the window, one per shown frame, for
automated tests of the windowed path.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import EdgekitError, InputError, first_line
from .capture import END, CaptureThread, Channel, Frame, SourceSpec, make_reader
from .overlay import FpsMeter, Overlay, short_label
from .preprocess import FramePreprocessor
from .select import Classifier
from .summary import DemoSummary
from .window import CLOSED, KEY_PAUSE, KEY_QUIT, KEY_SNAPSHOT, open_window

VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}
DRAIN_SECONDS = 5.0

Say = Callable[[str], None]


class SourceLostError(EdgekitError):
    exit_code = 1


@dataclass
class DemoOptions:
    source: str = "0"
    topk: int = 5
    headless: bool = False
    output: Path | None = None
    jsonl: Path | None = None
    json_summary: Path | None = None
    max_frames: int | None = None
    realtime: bool = False
    snapshot_dir: Path | None = None
    reconnect_attempts: int = 3
    reconnect_delay: float = 0.5
    queue_size: int = 4
    status_line: bool = True  # a live one-line status on stderr when it is a terminal
    opener: Any = None  # replaces cv2.VideoCapture(target, api) (tests simulate cameras with it)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities; outputs that already are a distribution (a softmax inside the model) pass."""
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    if x.size and x.min() >= 0 and abs(x.sum() - 1.0) < 1e-3:
        return x
    e = np.exp(x - x.max())
    return e / e.sum()


def top_k(probs: np.ndarray, k: int, skip: int = 0) -> list[tuple[int, float]]:
    """(output index, probability) of the k best outputs, leaving out the first ``skip`` (the
    background output of TF's 1001-class models)."""
    p = probs[skip:]
    k = min(k, p.size)
    idx = np.argpartition(-p, k - 1)[:k]
    idx = idx[np.argsort(-p[idx], kind="stable")]
    return [(int(i) + skip, float(p[i])) for i in idx]


def check_output_path(path: Path, option: str = "--output") -> None:
    if option == "--output" and path.suffix.lower() not in VIDEO_CODECS:
        raise InputError(f"--output {path.name}: use one of {', '.join(VIDEO_CODECS)} "
                         "(mp4v for MP4/MOV/MKV, MJPG for AVI)")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{option} folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{option} folder {parent} is not writable")
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder")


def check_options(options: DemoOptions, models: list[str | Path | None] = (),
                  open_source: bool = True) -> SourceSpec:
    """Check the source and output paths, before any model is loaded (loading a convert folder can
    take a latency probe): the source is opened once (cameras and streams too; ``open_source``
    False when it is opened for real right after), and no output may be the source, one of
    ``models`` (PATH, --weights) or another output, or land in a build folder."""
    from ..fileio import check_outputs

    spec = SourceSpec.parse(options.source)
    for option, path in (("--output", options.output), ("--jsonl", options.jsonl),
                         ("--json-summary", options.json_summary)):
        if path is not None:
            check_output_path(Path(path), option)
    inputs = [Path(p) for p in (*models, None if spec.live else spec.value) if p is not None]
    check_outputs([("--output", options.output), ("--jsonl", options.jsonl),
                   ("--json-summary", options.json_summary)], inputs)
    if options.snapshot_dir is not None and Path(options.snapshot_dir).is_file():
        raise InputError(f"--snapshot-dir {options.snapshot_dir} is a file, not a folder")
    if options.topk < 1:
        raise InputError("--topk must be >= 1")
    if open_source:
        reader = make_reader(spec, options.opener)
        reader.open()
        reader.release()
    return spec


# ---------------------------------------------------------------------------------------------


class InferenceThread(threading.Thread):
    def __init__(self, classifier: Classifier, inp: Channel, out: Channel, stop: threading.Event,
                 abort: threading.Event, preprocess: Callable[[np.ndarray], Any], topk: int):
        super().__init__(name="edgekit-inference", daemon=True)
        self.c = classifier
        self.inp, self.out = inp, out
        self.stop, self.abort = stop, abort
        self.preprocess = preprocess
        self.topk = topk
        self.infer_ms: list[float] = []
        self.post_ms: list[float] = []
        self.prep_ms: list[float] = []  # live sources: preprocessing happens here
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            self.error = exc
            self.stop.set()
        finally:
            self.out.put(END)

    def _loop(self) -> None:
        session, skip = self.c.session, self.c.offset
        while not self.abort.is_set():
            frame = self.inp.get(timeout=0.1)
            if frame is None:
                continue
            if frame is END:
                return
            if self.stop.is_set():
                continue  # winding down: drain without working
            if frame.tensor is None:
                t0 = time.perf_counter_ns()
                frame.tensor = self.preprocess(frame.image)
                frame.prep_ms = (time.perf_counter_ns() - t0) / 1e6
                self.prep_ms.append(frame.prep_ms)
            t0 = time.perf_counter_ns()
            raw = session.infer(frame.tensor)
            t1 = time.perf_counter_ns()
            frame.topk = top_k(softmax(session.finish(raw)), self.topk, skip)
            t2 = time.perf_counter_ns()
            frame.infer_ms, frame.post_ms = (t1 - t0) / 1e6, (t2 - t1) / 1e6
            frame.tensor = None  # free it early
            self.infer_ms.append(frame.infer_ms)
            self.post_ms.append(frame.post_ms)
            if not self.out.put(frame, self.abort):
                return


class RecorderThread(threading.Thread):
    """Encodes annotated frames with cv2.VideoWriter into a hidden partial file, renamed into
    place when closed, so ``path`` only ever holds a finished, playable video."""

    def __init__(self, path: Path, fps: float, inp: Channel, stop: threading.Event,
                 abort: threading.Event):
        super().__init__(name="edgekit-recorder", daemon=True)
        self.stop = stop
        self.path = Path(path)
        self.partial = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.fps = fps
        self.inp = inp
        self.abort = abort
        self.encode_ms: list[float] = []
        self.frames = 0
        self.size: tuple[int, int] | None = None
        self.error: BaseException | None = None
        self._writer = None

    def run(self) -> None:
        try:
            while True:
                image = self.inp.get(timeout=0.1)
                if image is None:
                    if self.abort.is_set():
                        break
                    continue
                if image is END:
                    break
                self._write(image)
        except BaseException as exc:  # e.g. disk full: end the run, report it in the summary
            self.error = exc
            self.stop.set()
            self.abort.set()
        finally:
            self._close()

    def _write(self, image: np.ndarray) -> None:
        import cv2

        if self._writer is None:
            h, w = image.shape[:2]
            self.size = (w, h)
            fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[self.path.suffix.lower()])
            self._writer = cv2.VideoWriter(str(self.partial), fourcc, self.fps, self.size)
            if not self._writer.isOpened():
                self._writer = None
                raise InputError(f"cannot write {self.path}: OpenCV/FFmpeg has no "
                                 f"{VIDEO_CODECS[self.path.suffix.lower()]} writer here")
        if (image.shape[1], image.shape[0]) != self.size:
            image = letterbox(image, self.size)
        t0 = time.perf_counter_ns()
        self._writer.write(image)
        self.encode_ms.append((time.perf_counter_ns() - t0) / 1e6)
        self.frames += 1

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.release()  # writes the MP4 index: the file becomes playable
            self._writer = None
            os.replace(self.partial, self.path)


def letterbox(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Fit ``image`` into ``size`` (w, h) keeping its aspect ratio, on black."""
    import cv2

    w, h = size
    scale = min(w / image.shape[1], h / image.shape[0])
    nw, nh = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
    out = np.zeros((h, w, 3), np.uint8)
    x, y = (w - nw) // 2, (h - nh) // 2
    out[y:y + nh, x:x + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


# ---------------------------------------------------------------------------------------------


class _Signals:
    """Ctrl-C / SIGTERM set a flag the main loop checks (so a frame is never half-written);
    a second one raises KeyboardInterrupt to stop at once."""

    def __init__(self):
        self.fired = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.fired.is_set():
            raise KeyboardInterrupt
        self.fired.set()

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


@contextlib.contextmanager
def _native_stderr_silenced():
    """Decoders write straight to fd 2 from the capture thread (libjpeg's "Corrupt JPEG data:
    premature end of data segment", OpenCV's own log lines): for the run, fd 2 goes to /dev/null
    and sys.stderr to a copy of the real stderr, so only edgekit's lines reach it (set
    EDGEKIT_DEBUG to see everything)."""
    if os.environ.get("EDGEKIT_DEBUG"):
        yield
        return
    previous = sys.stderr
    with contextlib.suppress(Exception):
        previous.flush()
    try:
        real, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    try:
        on_fd2 = previous.fileno() == 2
    except (AttributeError, OSError, ValueError):  # e.g. captured by a test runner
        on_fd2 = False
    if on_fd2:
        sys.stderr = open(real, "w", buffering=1, encoding=previous.encoding, errors=previous.errors,
                          closefd=False)
    os.dup2(null, 2)
    os.close(null)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(real, 2)
        if on_fd2:
            sys.stderr.close()
            sys.stderr = previous
        os.close(real)


def run_demo(classifier: Classifier, options: DemoOptions, say: Say | None = None) -> DemoSummary:
    """Run the pipeline until the source ends, the user stops it or ``max_frames``; returns the
    summary (also written to ``options.json_summary``). Errors that happen before the first frame
    (source does not open, bad output path) raise; errors mid-run end the run and are reported in
    the summary (``error``, ``exit_code``)."""
    with _native_stderr_silenced():
        return _run(classifier, options, say or (lambda _m: None))


def _run(classifier: Classifier, options: DemoOptions, say: Say) -> DemoSummary:
    spec = check_options(options, [classifier.path], open_source=False)
    reader = make_reader(spec, options.opener)
    reader.open()
    live = spec.live or options.realtime
    window = None if options.headless else open_window(say)

    frame_pre = FramePreprocessor(classifier.preprocessing)
    session = classifier.session

    def preprocess(image: np.ndarray):
        return session.prepare(frame_pre(image))

    classifier.warm_up()
    stop, abort = threading.Event(), threading.Event()
    frames_ch = Channel(options.queue_size, latest=live)
    results_ch = Channel(options.queue_size)
    capture = CaptureThread(reader, frames_ch, stop, abort, None if live else preprocess,
                            max_frames=None if live else options.max_frames,
                            realtime=options.realtime, reconnect_attempts=options.reconnect_attempts,
                            reconnect_delay=options.reconnect_delay, say=lambda m: say(f"notice: {m}"))
    inference = InferenceThread(classifier, frames_ch, results_ch, stop, abort, preprocess,
                                options.topk)
    recorder = record_ch = None
    if options.output is not None:
        record_ch = Channel(max(8, 2 * options.queue_size))
        recorder = RecorderThread(Path(options.output), reader.fps or 30.0, record_ch, stop, abort)
    presenter = _Presenter(classifier, options, window, record_ch, say)
    jsonl = open(options.jsonl, "w", buffering=1) if options.jsonl else None
    presenter.jsonl = jsonl
    presenter.abort = abort
    presenter.live = live
    threads = [t for t in (capture, inference, recorder) if t is not None]
    for t in threads:
        t.start()
    try:
        with _Signals() as signals:
            if not presenter.loop(results_ch, stop, signals):
                _drain(results_ch)  # let the other threads see the stop and wind down
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, still finalise the video
        presenter.ended = "interrupted"
        abort.set()
    finally:
        stop.set()
        frames_ch.close()
        results_ch.close()
        for t in (capture, inference):
            t.join(timeout=3)
        if record_ch is not None:
            record_ch.put(END)
            recorder.join(timeout=60)
        if jsonl is not None:
            jsonl.close()
        if window is not None:
            window.close()
        presenter.end_status()
    return _summary(classifier, options, spec, reader, capture, inference, recorder, presenter,
                    frames_ch)


def _drain(channel: Channel) -> None:
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline:
        if channel.get(timeout=0.1) is END:
            return


class _Presenter:
    """The main thread's part: overlay, JSON lines, window and keys, hand-off to the recorder."""

    def __init__(self, classifier: Classifier, options: DemoOptions, window, record_ch: Channel | None,
                 say: Say):
        self.c = classifier
        self.options = options
        self.window = window
        self.record_ch = record_ch
        self.say = say
        self.overlay = Overlay(classifier.title)
        self.meter = FpsMeter()
        self.jsonl = None
        self.frames = 0
        self.overlay_ms: list[float] = []
        self.latency_ms: list[float] = []
        self.t_first: float | None = None
        self.t_last: float | None = None
        self.paused_s = 0.0
        self.ended: str | None = None
        self.snapshots: list[str] = []
        self.keys = [k for k in os.environ.get("EDGEKIT_DEMO_KEYS", "").split(",") if k]
        self._status = options.status_line and sys.stderr.isatty()
        self._status_at = 0.0
        self._last_image: np.ndarray | None = None
        self._last_index = 0
        self.abort: threading.Event | None = None
        self.live = False
        self.discarded = 0  # live: frames that went stale during a pause

    def loop(self, results: Channel, stop: threading.Event, signals: _Signals) -> bool:
        """Present frames until the end of the stream (True) or a stop request (False)."""
        paused = False
        while True:
            if signals.fired.is_set():
                self.ended = "interrupted"
                stop.set()
                return False
            if paused:
                t0 = time.perf_counter()
                paused = self._keys(self.window.poll(30), paused, stop)
                self.paused_s += time.perf_counter() - t0
                if stop.is_set():
                    return False
                if not paused and self.live:  # results queued before the pause are stale now
                    while (stale := results.get(timeout=0)) not in (None, END):
                        self.discarded += 1
                    if stale is END:
                        return True
                continue
            frame = results.get(timeout=0.05)
            if frame is None:
                if self.window is not None:
                    paused = self._keys(self.window.poll(1), paused, stop)
                    if stop.is_set():
                        return False
                continue
            if frame is END:
                return True
            self._present(frame)
            if self.window is not None:
                self.window.show(self._last_image)
                key = self.window.poll(1)
                if key is None and self.keys:
                    key = ord(self.keys.pop(0)[0])
                paused = self._keys(key, paused, stop)
                if stop.is_set():
                    return False
            if self.options.max_frames is not None and self.frames >= self.options.max_frames:
                self.ended = self.ended or "max frames"
                stop.set()
                return False

    def _keys(self, key: int | None, paused: bool, stop: threading.Event) -> bool:
        if key is None:
            return paused
        if key == CLOSED or key in KEY_QUIT:
            self.ended = "quit"
            stop.set()
        elif key in KEY_PAUSE:
            paused = not paused
            if self._last_image is not None:
                self.window.show(self.overlay.paused(self._last_image) if paused else self._last_image)
        elif key in KEY_SNAPSHOT:
            self._snapshot()
        return paused

    def _snapshot(self) -> None:
        import cv2

        if self._last_image is None:
            return
        folder = Path(self.options.snapshot_dir) if self.options.snapshot_dir else Path.cwd()
        path = folder / f"edgekit-demo-{time.strftime('%Y%m%d-%H%M%S')}-frame{self._last_index:06d}.png"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            written = cv2.imwrite(str(path), self._last_image)
        except (OSError, cv2.error) as exc:
            written = False
            self.say(f"notice: could not write snapshot {path}: {exc}")
            return
        if written:
            self.snapshots.append(str(path))
            self.say(f"snapshot: {path}")
        else:
            self.say(f"notice: could not write snapshot {path}")

    def _present(self, frame: Frame) -> None:
        t0 = time.perf_counter_ns()
        preds = [(self.c.label(i), p) for i, p in frame.topk]
        now = time.perf_counter()
        fps = self.meter.tick(now)
        image = self.overlay.draw(frame.image, preds, fps, frame.infer_ms)
        self.overlay_ms.append((time.perf_counter_ns() - t0) / 1e6)
        if self.jsonl is not None:
            record = {"frame": frame.index}
            if frame.file is not None:
                record["file"] = frame.file
            record.update({
                "time_ms": round(frame.time_ms, 3), "latency_ms": round(frame.infer_ms, 3),
                "topk": [{"label": self.c.label(i), "index": i - self.c.offset, "score": round(p, 6)}
                         for i, p in frame.topk]})
            self.jsonl.write(json.dumps(record) + "\n")
        if self.record_ch is not None:
            self.record_ch.put(image, self.abort)
        self.frames += 1
        self.t_first = self.t_first if self.t_first is not None else now
        self.t_last = now
        self.latency_ms.append((time.perf_counter_ns() - frame.t_capture) / 1e6)
        self._last_image, self._last_index = image, frame.index
        if self._status and now - self._status_at > 0.5:
            self._status_at = now
            top = f"{short_label(preds[0][0])} {preds[0][1]:.0%}" if preds else ""
            sys.stderr.write(f"\rframe {frame.index}  {fps:5.1f} FPS  inference {frame.infer_ms:6.2f} ms"
                             f"  {top:<40}")
            sys.stderr.flush()

    def end_status(self) -> None:
        if self._status and self._status_at:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _nothing_read(spec: SourceSpec, reader) -> str:
    unreadable = getattr(reader, "unreadable", None)
    if unreadable:
        more = ", ..." if len(unreadable) > 5 else ""
        return (f"none of the {len(unreadable)} image(s) in {spec.value} could be read: "
                + ", ".join(unreadable[:5]) + more)
    return f"no frame of {spec.label} could be read (damaged or empty?)"


def _summary(classifier: Classifier, options: DemoOptions, spec: SourceSpec, reader,
             capture: CaptureThread, inference: InferenceThread, recorder: RecorderThread | None,
             presenter: _Presenter, frames_ch: Channel) -> DemoSummary:
    cs = capture.stats
    error = next((t.error for t in (capture, inference, recorder) if t is not None and t.error), None)
    ended = presenter.ended or cs.end_reason
    notices = list(cs.notices)
    if getattr(reader, "unreadable", None) and cs.frames:  # none read: the error names them
        notices.append(f"skipped {len(reader.unreadable)} unreadable image(s): "
                       + ", ".join(reader.unreadable[:5]))
    exit_code, message = 0, None
    if error is not None:
        ended = "error"
        if isinstance(error, EdgekitError):
            exit_code, message = error.exit_code, str(error)
        else:
            name, first = type(error).__name__, first_line(error)
            exit_code, message = 1, first if first == name else f"{name}: {first}"
    elif ended == "source lost":
        exit_code = SourceLostError.exit_code
        message = (f"{spec.label} stopped delivering frames; {options.reconnect_attempts} reconnect "
                   "attempts failed")
    elif ended == "end of stream" and cs.frames == 0:
        exit_code, message = InputError.exit_code, _nothing_read(spec, reader)
    seconds = ((presenter.t_last - presenter.t_first - presenter.paused_s)
               if presenter.t_first is not None else 0.0)
    stages = {"decode": cs.decode_ms, "preprocess": cs.prep_ms + inference.prep_ms,
              "inference": inference.infer_ms, "postprocess": inference.post_ms,
              "overlay": presenter.overlay_ms, "encode": recorder.encode_ms if recorder else []}
    undecodable = cs.undecodable + len(getattr(reader, "unreadable", []))
    summary = DemoSummary.build(
        frames=presenter.frames, seconds=seconds, infer_ms=inference.infer_ms, stages=stages,
        latency_ms=presenter.latency_ms, source=spec.label, model=str(classifier.path),
        backend=classifier.backend, precision=classifier.precision, threads=classifier.threads,
        runtime=classifier.session.runtime.to_dict(), choice=classifier.reason,
        captured=cs.frames, dropped=frames_ch.dropped + presenter.discarded,
        undecodable=undecodable, reconnects=cs.reconnects, ended=ended,
        output=str(options.output) if options.output else None,
        frames_written=recorder.frames if recorder else None,
        jsonl=str(options.jsonl) if options.jsonl else None, snapshots=presenter.snapshots,
        notices=notices, error=message, exit_code=exit_code,
        live=spec.live or options.realtime, source_fps=round(float(reader.fps or 0.0), 3))
    if options.json_summary:
        from ..fileio import write_text_atomic

        write_text_atomic(Path(options.json_summary), json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary
