"""What a demo run did: frames, FPS, inference latency, pipeline overhead and per-stage times."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

STAGES = ("decode", "preprocess", "inference", "postprocess", "overlay", "encode")
# Fewer frames than this say nothing about steady-state overhead: the first ones overlap the
# pipeline filling up (2 frames gave "-6 ms per frame", "145% of inference-only FPS")
MIN_OVERHEAD_FRAMES = 10


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(a.mean()), 4), "p50": round(float(np.percentile(a, 50)), 4),
            "p90": round(float(np.percentile(a, 90)), 4)}


@dataclass
class DemoSummary:
    source: str
    model: str
    backend: str
    precision: str
    threads: int | None
    runtime: dict
    choice: str
    frames: int  # frames classified and shown/recorded
    captured: int  # frames read from the source (including the dropped ones)
    dropped: int  # stale frames skipped to stay live
    undecodable: int  # frames that failed to decode and were skipped
    reconnects: int
    ended: str  # "end of stream", "max frames", "quit", "interrupted", "source lost", "error"
    seconds: float  # from the first to the last frame shown (pauses excluded)
    fps: float  # mean end-to-end frame rate over those seconds
    inference_ms: dict | None  # mean / p50 / p90 of Session.infer alone
    inference_fps: float  # what inference alone could sustain: 1000 / mean inference ms
    overhead: dict  # end-to-end vs inference-only
    stages_ms: dict  # mean ms per frame of each stage (None when the stage did not run)
    latency_ms: dict | None  # capture -> shown, per frame (mean / p50 / p90)
    live: bool = False  # camera/stream (or --realtime): frames come at the source's pace
    source_fps: float = 0.0  # the rate the source announces (0: unknown)
    output: str | None = None
    frames_written: int | None = None
    jsonl: str | None = None
    snapshots: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    error: str | None = None
    exit_code: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def build(cls, *, frames: int, seconds: float, infer_ms: list[float],
              stages: dict[str, list[float]], latency_ms: list[float], **rest) -> "DemoSummary":
        inference = _stats(infer_ms)
        fps = (frames - 1) / seconds if frames > 1 and seconds > 0 else 0.0
        inference_fps = 1000.0 / inference["mean"] if inference and inference["mean"] > 0 else 0.0
        per_frame = 1000.0 / fps if fps > 0 and frames >= MIN_OVERHEAD_FRAMES else None
        overhead = {
            "ms_per_frame": (round(per_frame - inference["mean"], 4)
                             if per_frame is not None and inference else None),
            "fps_ratio": (round(fps / inference_fps, 4)
                          if per_frame is not None and inference_fps > 0 else None),
        }
        stage_means = {s: (round(float(np.mean(stages[s])), 4) if stages.get(s) else None)
                       for s in STAGES}
        return cls(frames=frames, seconds=round(seconds, 4), fps=round(fps, 3),
                   inference_ms=inference, inference_fps=round(inference_fps, 3), overhead=overhead,
                   stages_ms=stage_means, latency_ms=_stats(latency_ms), **rest)

    def bottleneck(self) -> str | None:
        """The stage with the largest mean time (each stage runs in its own thread, or shares
        one: decode+preprocess for files, overlay in the main thread, encode in the recorder)."""
        s = {k: v for k, v in self.stages_ms.items() if v is not None}
        return max(s, key=s.get) if s else None

    def lines(self) -> list[str]:
        """Human-readable summary lines (the model and why it was chosen are said when it loads)."""
        out = [f"source:     {self.source} — ended: {self.ended}"]
        counts = f"frames:     {self.frames} classified"
        extras = [f"{self.captured} read"] if self.captured != self.frames else []
        if self.dropped:
            extras.append(f"{self.dropped} stale dropped")
        if self.undecodable:
            extras.append(f"{self.undecodable} undecodable skipped")
        if self.reconnects:
            extras.append(f"{self.reconnects} reconnects")
        out.append(counts + (f" ({', '.join(extras)})" if extras else ""))
        if self.frames:
            out.append(f"frame rate: {self.fps:.1f} FPS end-to-end over {self.seconds:.2f} s")
        if self.inference_ms:
            i = self.inference_ms
            out.append(f"inference:  mean {i['mean']:.2f} ms, p50 {i['p50']:.2f} ms, p90 {i['p90']:.2f} ms"
                       f" (alone: {self.inference_fps:.1f} FPS)")
        source_bound = (self.live and self.frames >= MIN_OVERHEAD_FRAMES and self.source_fps > 0 and self.inference_fps > self.source_fps
                        and self.fps >= 0.85 * self.source_fps)
        if source_bound:
            out.append(f"overhead:   none visible: the source sets the pace ({self.source_fps:.1f} FPS; "
                       f"inference alone could do {self.inference_fps:.1f})")
        elif self.overhead.get("fps_ratio") is not None:
            out.append(f"overhead:   {self.overhead['ms_per_frame']:+.2f} ms per frame beyond inference; "
                       f"end-to-end runs at {self.overhead['fps_ratio']:.0%} of inference-only FPS")
        elif 0 < self.frames < MIN_OVERHEAD_FRAMES and self.inference_ms:
            out.append(f"overhead:   not measured ({self.frames} frame{'s' if self.frames > 1 else ''}; "
                       f"it takes at least {MIN_OVERHEAD_FRAMES})")
        stages = ", ".join(f"{k} {v:.2f}" for k, v in self.stages_ms.items() if v is not None)
        if stages:
            out.append(f"per frame:  {stages} ms (mean; stages overlap in threads)")
        if self.latency_ms:
            out.append(f"latency:    capture to display mean {self.latency_ms['mean']:.1f} ms, "
                       f"p90 {self.latency_ms['p90']:.1f} ms")
        if self.output:
            out.append(f"video:      {self.output} ({self.frames_written} frames)")
        if self.jsonl:
            out.append(f"jsonl:      {self.jsonl}")
        for s in self.snapshots:
            out.append(f"snapshot:   {s}")
        return out
