"""Frame sources and the capture thread.

A source is a camera index, a /dev/videoN device, a stream URL (rtsp://, http://, ...), a video
file or a folder of images. Cameras and streams are *live*: the capture thread keeps only the
newest frame (stale ones are dropped, so latency stays at one frame), and when frames stop it
reconnects a few times with backoff before giving up. Files and folders are processed frame by
frame in order (every frame, with back-pressure), unless ``realtime`` paces a file at its own
frame rate and treats it like a camera.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..preprocessing import is_image_file

# FFmpeg prints one line per corrupt packet; the demo counts them instead. Set before cv2 loads.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

MAX_FILE_READ_FAILURES = 25  # consecutive failed reads before a file counts as ended
MAX_LIVE_READ_FAILURES = 5  # consecutive failed reads before a live source counts as lost
IMAGE_FOLDER_FPS = 2.0  # recording rate for a folder of images (a slideshow)


def cv2():
    import cv2 as _cv2

    return _cv2


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # "camera", "device", "stream", "file" or "images"
    value: str | int
    live: bool

    @property
    def label(self) -> str:
        return {"camera": f"camera {self.value}", "device": f"{self.value}", "stream": f"{self.value}",
                "file": f"{self.value}", "images": f"images in {self.value}"}[self.kind]

    @classmethod
    def parse(cls, text: str | int) -> "SourceSpec":
        text = str(text).strip()
        if text.isdigit():
            return cls("camera", int(text), True)
        if text.startswith("/dev/video"):
            return cls("device", text, True)
        if "://" in text:
            return cls("stream", text, True)
        path = Path(text)
        if path.is_dir():
            return cls("images", str(path), False)
        if not path.exists():
            raise InputError(f"video file not found: {text} (give a camera index, /dev/videoN, "
                             "a stream URL, a video file or a folder of images)")
        if not path.is_file():
            raise InputError(f"{text} is not a video file")
        return cls("file", str(path), False)


@dataclass
class Frame:
    """One frame on its way through the pipeline; each stage fills in its part."""

    index: int  # the source's frame number (gaps where frames were dropped or undecodable)
    image: np.ndarray  # BGR uint8, as captured
    time_ms: float  # media time for files and folders, ms since capture start for live sources
    t_capture: int  # perf_counter_ns when the frame was read
    decode_ms: float
    file: str | None = None  # the image's file name (image-folder sources)
    tensor: Any = None  # the runtime's prepared input, once preprocessed
    prep_ms: float = 0.0
    infer_ms: float = 0.0
    post_ms: float = 0.0
    topk: list = field(default_factory=list)  # [(output index, probability)]


END = object()  # end-of-stream marker; passes through every channel


class Channel:
    """Hand-over between two threads: a bounded FIFO (every item, blocking when full) or, with
    ``latest``, a one-frame slot where a new frame replaces the one not yet taken (counted)."""

    def __init__(self, capacity: int = 4, latest: bool = False):
        self.capacity = max(1, capacity)
        self.latest = latest
        self.dropped = 0
        self._items: deque = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item, abort: threading.Event | None = None) -> bool:
        """False when the channel was closed (the consumer is gone)."""
        with self._cond:
            if item is END:
                self._items.append(END)
            elif self.latest:
                if self._items and self._items[-1] is not END:
                    self._items.pop()
                    self.dropped += 1
                self._items.append(item)
            else:
                while len(self._items) >= self.capacity and not self._closed:
                    if abort is not None and abort.is_set():
                        return False
                    self._cond.wait(0.05)
                if self._closed:
                    return False
                self._items.append(item)
            self._cond.notify_all()
            return not self._closed

    def get(self, timeout: float | None = None):
        """The next item, END, or None on timeout."""
        with self._cond:
            if not self._items and not self._cond.wait_for(lambda: self._items or self._closed,
                                                           timeout):
                return None
            if not self._items:
                return END
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


# ---------------------------------------------------------------------------------------------
# Readers: one interface over cv2.VideoCapture and image folders


class VideoReader:
    """cv2.VideoCapture over a camera, device, stream or file."""

    @property
    def last_index(self) -> int:
        return self._last_index

    def __init__(self, spec: SourceSpec, opener: Callable[[Any, int], Any] | None = None):
        self.spec = spec
        self._opener = opener or (lambda target, api: cv2().VideoCapture(target, api))
        self.cap = None
        self.fps = 0.0
        self.frame_count = 0
        self.position = 0  # frames read (files: the decoder's count)
        self._last_index = -1
        self._t0: int | None = None

    def _attempts(self) -> list[tuple[Any, int, str]]:
        c = cv2()
        linux = sys.platform.startswith("linux")
        v = self.spec.value
        if self.spec.kind == "camera":
            return ([(v, c.CAP_V4L2, f"index {v} via V4L2")] if linux else []) + \
                   [(v, c.CAP_ANY, f"index {v} via OpenCV's default backend")]
        if self.spec.kind == "device":
            return ([(v, c.CAP_V4L2, f"{v} via V4L2")] if linux else []) + \
                   [(v, c.CAP_ANY, f"{v} via OpenCV's default backend")]
        return [(v, c.CAP_FFMPEG, f"{v} via FFmpeg"), (v, c.CAP_ANY, f"{v} via OpenCV's default backend")]

    def open(self, quiet: bool = False) -> None:
        c = cv2()
        tried = []
        level = c.utils.logging.getLogLevel()
        c.utils.logging.setLogLevel(c.utils.logging.LOG_LEVEL_ERROR)  # we explain failures ourselves
        try:
            for target, api, what in self._attempts():
                cap = self._opener(target, api)
                if cap is not None and cap.isOpened():
                    self.cap = cap
                    break
                if cap is not None:
                    cap.release()
                tried.append(what)
        finally:
            c.utils.logging.setLogLevel(level)
        if self.cap is None:
            if quiet:
                return
            raise InputError(self._open_error(tried))
        if self.spec.live:
            self.cap.set(c.CAP_PROP_BUFFERSIZE, 1)  # V4L2: keep the driver queue short
        fps = self.cap.get(c.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and 0 < fps < 1000 else 0.0
        count = self.cap.get(c.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if count and np.isfinite(count) and count > 0 else 0

    def _open_error(self, tried: list[str]) -> str:
        s = self.spec
        if s.kind in ("camera", "device"):
            devices = sorted(str(p) for p in Path("/dev").glob("video*")) if Path("/dev").is_dir() else []
            present = (f"video devices here: {', '.join(devices)}" if devices
                       else "no /dev/video* devices on this machine")
            return (f"camera {s.value} did not open (tried {'; '.join(tried)}; {present}). "
                    "List cameras with `v4l2-ctl --list-devices` or `ls /dev/video*`, then pass "
                    "--source N or --source /dev/videoN; a video file works as a source too")
        if s.kind == "stream":
            return f"stream {s.value} did not open (tried {'; '.join(tried)}): check the URL and network"
        return (f"cannot open {s.value} as a video (tried {'; '.join(tried)}): not a format "
                "OpenCV/FFmpeg can read, or a damaged file")

    def read(self) -> tuple[bool, np.ndarray | None, float, int]:
        """(ok, frame, time_ms, frame index)."""
        c = cv2()
        ok, frame = self.cap.read()
        now = time.perf_counter_ns()
        if not ok or frame is None or frame.size == 0:
            return False, None, 0.0, -1
        if self._t0 is None:
            self._t0 = now
        if frame.ndim == 2:
            frame = c.cvtColor(frame, c.COLOR_GRAY2BGR)
        elif frame.shape[2] == 4:
            frame = c.cvtColor(frame, c.COLOR_BGRA2BGR)
        if self.spec.live:
            index = self._last_index + 1
            time_ms = (now - self._t0) / 1e6
        else:  # media time: also right after undecodable frames, which the decoder does not count
            pos_ms = self.cap.get(c.CAP_PROP_POS_MSEC)
            index = round(pos_ms * self.fps / 1000) if self.fps and pos_ms > 0 else self._last_index + 1
            index = max(index, self._last_index + 1)
            time_ms = pos_ms if pos_ms > 0 or index == 0 else index * 1000 / (self.fps or 30)
        self._last_index = index
        self.position += 1
        return True, frame, float(time_ms), index

    def file_name(self, index: int) -> str | None:
        return None

    def release(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class ImageFolderReader:
    """Each image of a folder is one frame (sorted by name); unreadable images are skipped."""

    def __init__(self, spec: SourceSpec):
        self.spec = spec
        self.files = sorted(p for p in Path(spec.value).iterdir() if is_image_file(p))
        self.fps = IMAGE_FOLDER_FPS
        self.frame_count = len(self.files)
        self.position = 0
        self.unreadable: list[str] = []

    def open(self, quiet: bool = False) -> None:
        if not self.files:
            raise InputError(f"no images in {self.spec.value}")

    def read(self) -> tuple[bool, np.ndarray | None, float, int]:
        c = cv2()
        while self.position < len(self.files):
            i = self.position
            self.position += 1
            frame = c.imread(str(self.files[i]), c.IMREAD_COLOR)
            if frame is None or frame.size == 0:
                self.unreadable.append(self.files[i].name)
                continue
            return True, frame, i * 1000 / self.fps, i
        return False, None, 0.0, -1

    def file_name(self, index: int) -> str | None:
        return self.files[index].name

    def release(self) -> None:
        pass


def make_reader(spec: SourceSpec, opener=None):
    return ImageFolderReader(spec) if spec.kind == "images" else VideoReader(spec, opener)


# ---------------------------------------------------------------------------------------------
# The capture thread


@dataclass
class CaptureStats:
    frames: int = 0  # frames handed on
    undecodable: int = 0  # failed reads followed by a good one (skipped frames)
    reconnects: int = 0
    decode_ms: list[float] = field(default_factory=list)
    prep_ms: list[float] = field(default_factory=list)
    end_reason: str = "end of stream"
    notices: list[str] = field(default_factory=list)


class CaptureThread(threading.Thread):
    """Reads frames into ``out``. For files (not realtime) it also preprocesses, so decoding and
    preprocessing overlap inference; for live sources preprocessing waits for the inference
    thread to pick the newest frame (no work spent on frames that get dropped)."""

    def __init__(self, reader, out: Channel, stop: threading.Event, abort: threading.Event,
                 preprocess: Callable[[np.ndarray], Any] | None, max_frames: int | None = None,
                 realtime: bool = False, reconnect_attempts: int = 3, reconnect_delay: float = 0.5,
                 say: Callable[[str], None] | None = None):
        super().__init__(name="edgekit-capture", daemon=True)
        self.reader = reader
        self.out = out
        self.stop = stop
        self.abort = abort
        self.preprocess = preprocess
        self.max_frames = max_frames
        self.realtime = realtime
        self.live = reader.spec.live
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_delay = reconnect_delay
        self.stats = CaptureStats()
        self.error: BaseException | None = None
        self.say = say or (lambda _m: None)

    def _notice(self, message: str) -> None:
        self.stats.notices.append(message)
        self.say(message)

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by the pipeline after a clean shutdown
            self.error = exc
            self.stats.end_reason = "error"
            self.stop.set()
        finally:
            self.reader.release()
            self.out.put(END)

    def _loop(self) -> None:
        failures = 0
        started = None
        while not self.stop.is_set():
            if self.max_frames is not None and self.stats.frames >= self.max_frames:
                self.stats.end_reason = "max frames"
                return
            t0 = time.perf_counter_ns()
            ok, image, time_ms, index = self.reader.read()
            t1 = time.perf_counter_ns()
            if not ok:
                failures += 1
                if self.reader.spec.kind == "images":
                    return
                if self.live:
                    if failures >= MAX_LIVE_READ_FAILURES:
                        if not self._reconnect():
                            return
                        failures = 0
                    continue
                if failures >= MAX_FILE_READ_FAILURES:
                    self._note_early_end()
                    return
                continue
            self.stats.undecodable += failures  # failed reads followed by a good one: skipped frames
            failures = 0
            if self.realtime and not self.live:  # pace a file at its own frame rate
                if started is None:
                    started = time.perf_counter() - time_ms / 1000
                delay = started + time_ms / 1000 - time.perf_counter()
                if delay > 0 and self.stop.wait(delay):
                    return
            # latency counts from when the frame was read, or was due (a paced file)
            t_due = time.perf_counter_ns() if self.realtime and not self.live else t1
            frame = Frame(index, image, time_ms, t_due, (t1 - t0) / 1e6, self.reader.file_name(index))
            self.stats.decode_ms.append(frame.decode_ms)
            if self.preprocess is not None:
                p0 = time.perf_counter_ns()
                frame.tensor = self.preprocess(image)
                frame.prep_ms = (time.perf_counter_ns() - p0) / 1e6
                self.stats.prep_ms.append(frame.prep_ms)
            if not self.out.put(frame, self.abort):
                return
            self.stats.frames += 1
        self.stats.end_reason = "stopped"

    def _note_early_end(self) -> None:
        total, last = self.reader.frame_count, getattr(self.reader, "last_index", -1)
        if total and last + 1 < total - 1:  # one frame of slack: headers round
            self._notice(f"the video ended at frame {last + 1} of the {total} its header announces "
                         "(truncated or damaged file?)")

    def _reconnect(self) -> bool:
        """A live source stopped delivering: reopen it a few times with backoff."""
        label = self.reader.spec.label
        for attempt in range(1, self.reconnect_attempts + 1):
            self.reader.release()
            delay = self.reconnect_delay * 2 ** (attempt - 1)
            self._notice(f"{label}: no frames; reconnect attempt {attempt}/"
                         f"{self.reconnect_attempts} in {delay:.1f} s")
            if self.stop.wait(delay):
                return False
            self.reader.open(quiet=True)
            if getattr(self.reader, "cap", None) is not None:
                ok, image, *_ = self.reader.read()
                if ok:
                    self.stats.reconnects += 1
                    self._notice(f"{label}: reconnected")
                    return True
        self.stats.end_reason = "source lost"
        return False
