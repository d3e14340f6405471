"""Making files that nobody sees half-made or too open: a file written in full before it
appears (a temporary file beside it, renamed over the target: atomic within a directory),
and sockets created private."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Files created inside are 0600 at most, with no window where they are wider (a unix
    socket is created by bind, with the umask's mode). The event loop is single-threaded,
    so a short umask change cannot leak elsewhere."""
    previous = os.umask(0o177)
    try:
        yield
    finally:
        os.umask(previous)


def write_atomically(target: Path, text: str, *, mode: int = 0o644) -> None:
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".widget-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
