"""Draw the predictions and the live numbers onto a frame (in place, with OpenCV)."""
from __future__ import annotations

import time
from collections import deque

import numpy as np

FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX
TOP1_COLOUR = (80, 200, 80)  # BGR
OTHER_COLOUR = (150, 150, 150)
TEXT_COLOUR = (255, 255, 255)
PAUSED_COLOUR = (60, 60, 230)


def short_label(label: str, limit: int = 30) -> str:
    """First synonym ("tabby, tabby cat" -> "tabby"), ASCII only (Hershey fonts), truncated."""
    name = label.split(",")[0].strip() or label
    name = name.encode("ascii", "replace").decode("ascii")
    return name if len(name) <= limit else name[:limit - 1] + "~"


class FpsMeter:
    """Frames per second over the last ``window`` seconds (smooth, but follows changes)."""

    def __init__(self, window: float = 1.0):
        self.window = window
        self._times: deque[float] = deque()

    def tick(self, now: float | None = None) -> float:
        now = time.perf_counter() if now is None else now
        self._times.append(now)
        while len(self._times) > 2 and now - self._times[0] > self.window:
            self._times.popleft()
        return self.fps

    @property
    def fps(self) -> float:
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0


class Overlay:
    def __init__(self, title: str):
        self.title = title.encode("ascii", "replace").decode("ascii")

    def paused(self, image: np.ndarray) -> np.ndarray:
        """A copy of an annotated frame marked PAUSED (what the window shows while paused)."""
        import cv2

        out = image.copy()
        h = out.shape[0]
        scale = max(0.45, min(1.5, h / 480 * 0.6))
        (tw, th), _ = cv2.getTextSize("PAUSED", FONT, scale * 1.2, 2)
        cv2.putText(out, "PAUSED", (out.shape[1] - tw - 12, th + 12), FONT, scale * 1.2,
                    PAUSED_COLOUR, 2, cv2.LINE_AA)
        return out

    def draw(self, image: np.ndarray, predictions: list[tuple[str, float]], fps: float,
             latency_ms: float) -> np.ndarray:
        """``predictions``: (label, probability), best first. Draws on ``image`` and returns it."""
        import cv2

        h, w = image.shape[:2]
        scale = max(0.45, min(1.5, h / 480 * 0.6))
        thick = 1 if scale < 0.9 else 2
        line = int(36 * scale) + 2
        pad = int(10 * scale) + 2
        # top-left panel: the top-k with bars
        panel_w = min(w, max(int(w * 0.45), int(420 * scale)))
        panel_h = min(h, pad * 2 + line * max(1, len(predictions)))
        roi = image[:panel_h, :panel_w]
        roi[:] = cv2.convertScaleAbs(roi, alpha=0.35)
        bar_max = panel_w - 2 * pad
        for i, (label, score) in enumerate(predictions):
            y0 = pad + i * line
            bar = int(bar_max * float(np.clip(score, 0.0, 1.0)))
            if bar > 0:
                cv2.rectangle(image, (pad, y0 + 2), (pad + bar, y0 + line - 4),
                              TOP1_COLOUR if i == 0 else OTHER_COLOUR, -1)
            text = f"{score * 100:5.1f}%  {short_label(label)}"
            cv2.putText(image, text, (pad + 4, y0 + line - int(12 * scale) - 2), FONT, scale,
                        TEXT_COLOUR, thick, cv2.LINE_AA)
        # bottom status bar: backend/precision, FPS, inference latency
        bar_h = line + pad
        strip = image[h - bar_h:, :]
        strip[:] = cv2.convertScaleAbs(strip, alpha=0.35)
        status = f"{self.title} | {fps:5.1f} FPS | inference {latency_ms:6.2f} ms"
        cv2.putText(image, status, (pad, h - pad - 2), FONT, scale * 0.85, TEXT_COLOUR, thick,
                    cv2.LINE_AA)
        return image
