"""What edgekit's processes must not do behind the user's back: phone home, or leave a forked
helper that ignores SIGTERM (both hung `edgekit convert` at exit on a machine without network)."""
import os
import signal
import time

import pytest

from edgekit import fileio


def test_a_forked_child_does_not_inherit_the_sigterm_cleanup(tmp_path):
    with fileio.cleanup_on_sigterm():
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        pid = os.fork()
        if pid == 0:  # the child: exit 0 only when SIGTERM is back to the default
            os._exit(0 if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL else 1)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_forked_child_stuck_in_native_code_dies_on_sigterm():
    """The deadlocked telemetry child never returned to Python, so a Python-level handler could
    not run: only the default disposition ends it."""
    with fileio.cleanup_on_sigterm():
        pid = os.fork()
        if pid == 0:
            try:
                signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
                signal.sigwait([signal.SIGUSR1])  # blocks in native code, as the stuck child did
            finally:
                os._exit(0)
        time.sleep(0.3)  # let it block
        os.kill(pid, signal.SIGTERM)
        status = _wait(pid)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


def _wait(pid: int, seconds: float = 10.0) -> int:
    """waitpid, but a child that ignores SIGTERM fails the test instead of hanging it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the forked child ignored SIGTERM")


def test_openvino_telemetry_is_declined():
    telemetry = pytest.importorskip("openvino_telemetry", reason="needs the 'openvino' extra")
    import edgekit.backends.openvino_backend  # noqa: F401  (declines on import)

    # as the model converter creates it: opt-in dialog off, where a missing consent file means yes
    t = telemetry.Telemetry(app_name="edgekit-test", app_version="0", tid="G-0", backend="ga4",
                            enable_opt_in_dialog=False)
    assert t.consent is False
