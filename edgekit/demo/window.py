"""The optional OpenCV window. The headless OpenCV build has no GUI at all (imshow raises), and
the GUI build aborts the whole process when there is no display, so both are checked first."""
from __future__ import annotations

import os
import re
import sys

KEY_QUIT = {ord("q"), ord("Q"), 27}  # q, Esc
KEY_PAUSE = {ord(" ")}
KEY_SNAPSHOT = {ord("s"), ord("S")}
CLOSED = -2  # poll() result when the user closed the window


def gui_problem() -> str | None:
    """Why no window can be opened here, or None when one can."""
    import cv2

    match = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    if match and match.group(1).upper() == "NONE":
        return "this OpenCV build has no GUI (opencv-python-headless; opencv-python has one)"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY is not set)"
    return None


class Window:
    def __init__(self, name: str = "edgekit demo"):
        import cv2

        self.name = name
        cv2.namedWindow(name, cv2.WINDOW_AUTOSIZE)  # cv2.error when it cannot: caller falls back
        self._shown = False

    def show(self, image) -> None:
        import cv2

        cv2.imshow(self.name, image)
        self._shown = True

    def poll(self, ms: int = 1) -> int | None:
        """A key code, CLOSED, or None."""
        import cv2

        key = cv2.waitKey(ms)
        if self._shown:
            try:
                if cv2.getWindowProperty(self.name, cv2.WND_PROP_VISIBLE) < 1:
                    return CLOSED
            except cv2.error:
                return CLOSED
        return None if key < 0 else key & 0xFF

    def close(self) -> None:
        import cv2

        try:
            cv2.destroyWindow(self.name)
            cv2.waitKey(1)
        except cv2.error:
            pass


def open_window(say) -> Window | None:
    """A window, or None with a one-line notice saying why the demo runs headless."""
    problem = gui_problem()
    if problem is None:
        import cv2

        try:
            return Window()
        except cv2.error as exc:
            problem = f"cannot open a window ({str(exc).strip().splitlines()[-1]})"
    say(f"notice: {problem}; running headless (stop with Ctrl-C; --output/--jsonl record the run)")
    return None
