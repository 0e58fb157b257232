"""Live classification demo: camera/stream/video/images -> any backend -> overlay, window, recording.

    from edgekit.demo import load_classifier, run_demo, DemoOptions
    c = load_classifier("build/rpi4")            # the fastest artifact this host can run
    summary = run_demo(c, DemoOptions(source="video.mp4", headless=True, output="out.mp4"))
"""
from .pipeline import DemoOptions, run_demo
from .preprocess import FramePreprocessor
from .select import Classifier, load_classifier
from .summary import DemoSummary

__all__ = ["Classifier", "DemoOptions", "DemoSummary", "FramePreprocessor", "load_classifier",
           "run_demo"]
