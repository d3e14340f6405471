"""inotify on the event loop: directory watches that report (directory, name, flags).

One inotify fd, read by the loop only when the kernel says it is readable, so an
idle supervisor makes no system calls. Interpreting events is the caller's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from inotify_simple import INotify
from inotify_simple import flags as _flags

logger = logging.getLogger(__name__)

CREATE = int(_flags.CREATE)
DELETE = int(_flags.DELETE)
MOVED_TO = int(_flags.MOVED_TO)
MOVED_FROM = int(_flags.MOVED_FROM)
CLOSE_WRITE = int(_flags.CLOSE_WRITE)
ATTRIB = int(_flags.ATTRIB)
DELETE_SELF = int(_flags.DELETE_SELF)
MOVE_SELF = int(_flags.MOVE_SELF)
IGNORED = int(_flags.IGNORED)
Q_OVERFLOW = int(_flags.Q_OVERFLOW)
ISDIR = int(_flags.ISDIR)

DIRECTORY_EVENTS = (
    CREATE | DELETE | MOVED_TO | MOVED_FROM | CLOSE_WRITE | ATTRIB | DELETE_SELF | MOVE_SELF
)

Callback = Callable[[Path, str, int], None]
"""Called with the watched directory, the entry name ('' for the directory itself), flags."""


class DirectoryWatcher:
    """A set of inotify directory watches feeding one callback on the running loop."""

    def __init__(self, callback: Callback) -> None:
        self._inotify = INotify()
        self._callback = callback
        self._by_wd: dict[int, Path] = {}
        self._by_path: dict[Path, int] = {}
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._inotify.fileno(), self._drain)

    @property
    def watched(self) -> set[Path]:
        return set(self._by_path)

    def watch(self, directory: Path, mask: int = DIRECTORY_EVENTS) -> bool:
        """Watch `directory`; False (and a debug line) if it does not exist now."""
        if directory in self._by_path:
            return True
        try:
            wd = self._inotify.add_watch(str(directory), mask)
        except (FileNotFoundError, NotADirectoryError):
            logger.debug("cannot watch %s: it does not exist", directory)
            return False
        self._by_wd[wd] = directory
        self._by_path[directory] = wd
        return True

    def unwatch(self, directory: Path) -> None:
        wd = self._by_path.pop(directory, None)
        if wd is not None:
            self._by_wd.pop(wd, None)
            # OSError: the kernel already dropped it (the directory was deleted).
            with contextlib.suppress(OSError):
                self._inotify.rm_watch(wd)

    def close(self) -> None:
        self._loop.remove_reader(self._inotify.fileno())
        self._inotify.close()
        self._by_wd.clear()
        self._by_path.clear()

    def _drain(self) -> None:
        for event in self._inotify.read(timeout=0):
            if event.mask & Q_OVERFLOW:
                for path in list(self._by_path):
                    self._callback(path, "", Q_OVERFLOW)
                continue
            watched = self._by_wd.get(event.wd)
            if watched is None:
                continue
            directory = watched
            if event.mask & IGNORED:
                # The kernel removed the watch (directory deleted or unmounted).
                self._by_wd.pop(event.wd, None)
                if self._by_path.get(directory) == event.wd:
                    del self._by_path[directory]
            self._callback(directory, event.name, event.mask)
