"""Can mitmproxy's transparent local capture (eBPF) attach here? If not, say why in one sentence."""

from __future__ import annotations

import platform
import re
from pathlib import Path

MIN_KERNEL = (6, 8)
PROXY_ADVICE = (
    "use the proxy mode instead: `jitgate run` sets HTTPS_PROXY for the job, "
    "or set HTTPS_PROXY=http://jit:<token>@<gateway>:8080 by hand"
)


def capture_unavailable_reason(
    *, release: str | None = None, cgroup_root: Path = Path("/sys/fs/cgroup")
) -> str | None:
    """None when local capture can be tried, else the sentence to show the user."""
    release = release or platform.release()
    if platform.system() != "Linux":
        return f"Transparent capture needs Linux; this is {platform.system()}, so {PROXY_ADVICE}."
    m = re.match(r"(\d+)\.(\d+)", release)
    version = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    if version < MIN_KERNEL:
        return (
            f"Transparent capture needs Linux >= {MIN_KERNEL[0]}.{MIN_KERNEL[1]} for its eBPF programs, "
            f"but this kernel is {release}, so {PROXY_ADVICE}."
        )
    if not (cgroup_root / "cgroup.controllers").exists():
        return (
            f"Transparent capture needs the unified cgroup v2 hierarchy at {cgroup_root}, "
            f"which this machine does not mount, so {PROXY_ADVICE}."
        )
    return None
