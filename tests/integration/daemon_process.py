"""A kbuildd the tests start by hand: waiting until it accepts calls, and stopping it."""

import os
import signal
import socket
import subprocess
import time


def wait_listening(process, socket_path, seconds):
    """True once `socket_path` accepts a connection; False if `process` exits or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.path.exists(socket_path):
            with socket.socket(socket.AF_UNIX) as s:
                try:
                    s.connect(socket_path)
                    return True
                except OSError:
                    pass
        if process.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def terminate(process, timeout=30):
    """SIGTERM, then SIGKILL to its process group (it runs in a session of its own) after
    `timeout` seconds; its exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode
