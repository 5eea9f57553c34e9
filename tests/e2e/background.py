"""A blocking client call run in a thread, for tests that decide on it meanwhile (held requests)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Background:
    """Run a blocking client call in a thread; `result()` waits for it."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.value = fn()
        except BaseException as exc:
            self.error = exc

    def running(self) -> bool:
        return self._thread.is_alive()

    def result(self, timeout: float = 60) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the client call never returned"
        if self.error is not None:
            raise self.error
        return self.value
