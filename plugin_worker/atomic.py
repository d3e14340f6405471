"""Writing a file so that no reader ever sees half of it: write a temporary file beside it,
then rename it over the target (a rename within one directory is atomic)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


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
