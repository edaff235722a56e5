"""Watching a guest's reachability from the host side of the private namespace.

`Pinger` runs busybox ping every 50 ms inside the namespace and timestamps each reply,
so a test can tell how long a guest was cut off, to about 0.1 s. busybox ping exits when
the route disappears (the network's bridge is gone during a restart): it is restarted.
"""

from __future__ import annotations

import subprocess
import threading
import time

INTERVAL_S = 0.05


class Pinger:
    def __init__(self, netns: str, address: str):
        self.address = address
        self.replies: list[float] = []
        self._argv = ["ip", "netns", "exec", netns, "busybox", "ping", "-i", str(INTERVAL_S), address]
        self._stopped = threading.Event()
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            with self._lock:
                if self._stopped.is_set():
                    return
                self._process = subprocess.Popen(
                    self._argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
                )
            for line in self._process.stdout:
                if "bytes from" in line:
                    self.replies.append(time.monotonic())
            self._process.wait()
            self._stopped.wait(INTERVAL_S)

    def stop(self) -> None:
        """Stop the ping process by its PID and wait for it."""
        with self._lock:
            self._stopped.set()
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._thread.join(timeout=5)

    def __enter__(self) -> Pinger:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_for_reply(self, timeout: float = 10) -> bool:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.replies and self.replies[-1] > start:
                return True
            time.sleep(INTERVAL_S)
        return False

    def longest_gap(self, start: float, end: float) -> float:
        """Longest time without a reply between start and end (both edges count)."""
        inside = [t for t in self.replies if start <= t <= end]
        points = [start, *inside, end]
        return max(b - a for a, b in zip(points, points[1:], strict=False))

    def answered_between(self, start: float, end: float) -> int:
        return sum(start <= t <= end for t in self.replies)
