"""A local server in a child process that prints its base URL (after any warnings) on stdout."""

from __future__ import annotations

import collections
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_MAX_PREAMBLE_LINES = 200


def terminate(proc: subprocess.Popen[Any]) -> None:
    """End a child politely, then firmly after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class ChildServer:
    """Start `argv`, read the URL it prints, then drain its output so the pipe never blocks it.

    The last lines of its output are kept in `log`, for failure reports.
    """

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
        self._argv = list(argv)
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._proc: subprocess.Popen[str] | None = None
        self.log: collections.deque[str] = collections.deque(maxlen=200)
        self.url = ""

    def start(self) -> ChildServer:
        self._proc = subprocess.Popen(
            self._argv, env=self._env, cwd=self._cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert self._proc.stdout is not None
        # Warnings may come first (stderr is merged); EOF ("") means the child died.
        for _ in range(_MAX_PREAMBLE_LINES):
            line = self._proc.stdout.readline()
            if not line or line.startswith("http://"):
                break
            self.log.append(line.rstrip())
        if not line.startswith("http://"):
            self.stop()
            said = " | ".join(list(self.log)[-5:])[:500]
            raise RuntimeError(f"{self._argv[-3:]} did not start: {said!r}")
        self.url = line.strip()
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self.log.append(line.rstrip())

    def stop(self) -> None:
        if self._proc is not None:
            terminate(self._proc)

    def __enter__(self) -> ChildServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
