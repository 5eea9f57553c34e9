"""One method + path pattern of a named operation, the unit every dialect's route table is made of.

A path pattern is literal text with `{name}` placeholders matching one path segment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Route:
    """One method + path pattern of a named operation."""

    operation: str
    method: str
    path: str

    @cached_property
    def regex(self) -> re.Pattern[str]:
        parts: list[str] = []
        last = 0
        for m in _PLACEHOLDER.finditer(self.path):
            parts.append(re.escape(self.path[last : m.start()]))
            parts.append(f"(?P<{m.group(1)}>[^/?#]+)")
            last = m.end()
        parts.append(re.escape(self.path[last:]))
        return re.compile("".join(parts) + r"/?")

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The placeholders of `path` if this route matches, else None."""
        if method != self.method:  # exact: methods are case-sensitive (RFC 9110 §9.1), `post` is no POST
            return None
        m = self.regex.fullmatch(path.split("?", 1)[0])
        return m.groupdict() if m else None
