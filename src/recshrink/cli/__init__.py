"""The ``recshrink`` command line: a thin layer over :mod:`recshrink.api` (every command parses
its options, calls one entry function, prints and writes what it returns)."""

from recshrink.cli import compress, serve, train  # noqa: F401 (each registers its commands)
from recshrink.cli._base import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
