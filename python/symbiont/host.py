"""``python -m symbiont.host``: a host process serving its owner on fds 3 and 4.

See ``docs/PROTOCOL.md`` for the wire protocol; the loop itself is in ``symbiont._host``.
"""

from __future__ import annotations

from typing import NoReturn

__all__ = ["main"]


def main() -> NoReturn:
    """Run the host until its owner closes fd 3."""
    from ._host import run

    run()


if __name__ == "__main__":
    main()
