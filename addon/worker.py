"""One worker of `jitgate gateway --workers N`: mitmdump with its listener on SO_REUSEPORT.

`python -m addon.worker <mitmdump arguments>`; see addon/reuse_port.py for why this comes first.
"""

from __future__ import annotations

import sys

from mitmproxy.tools.main import mitmdump

from addon import reuse_port


def main() -> None:
    reuse_port.install()
    sys.exit(mitmdump(sys.argv[1:]))


if __name__ == "__main__":
    main()
