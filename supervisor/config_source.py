"""The config file as the supervisor serves it: read, parsed off the event loop, and read
again when it may have changed.

Owns what decides that the file changed (its content, mode and owner: a chmod alone is a
change, as permissions are checked), the parse in a bounded child process, the reason the
newest file was rejected, and which directories hold it (its own and, for a ConfigMap's
``..data`` symlink, its target's). Knows nothing of what a config serves.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from supervisor.config import Config, read_config
from supervisor.errors import ConfigError
from supervisor.parse_process import ConfigParser

Key = tuple[str, int, int]


@dataclass(frozen=True, slots=True)
class Rejected:
    """The newest file was refused; the last good config keeps serving."""

    error: ConfigError


class ConfigSource:
    def __init__(
        self,
        path: Path,
        *,
        domain: str,
        node_name: str | None,
        strict_perms: bool = True,
        fleet: bool = False,
    ) -> None:
        """`fleet`: configs carry every node's view (`Config.fleet`), for simulation."""
        self.path, self.domain, self.node_name, self.fleet = path, domain, node_name, fleet
        self.strict_perms = strict_perms
        self.error: str | None = None
        """Why the newest file on disk was rejected (None while it is the one serving)."""
        self._parser = ConfigParser()
        self._key: Key | None = None

    async def load(self) -> Config:
        """The first config; ConfigError if there is none to serve."""
        data = read_config(self.path, strict_perms=self.strict_perms)
        config = await self._parse(data)
        self._key = self._key_of(data)
        return config

    async def reload(self, *, force: bool = False) -> Config | Rejected | None:
        """The new config; `Rejected` if the file changed into one that is refused; None
        if it did not change (and not `force`). A refusal before parsing (unreadable,
        loose permissions) is reported once per state, not per event."""
        try:
            data = read_config(self.path, strict_perms=self.strict_perms)
        except ConfigError as error:
            key = (str(error), -1, -1)
            if key == self._key and not force:
                return None
            self._key = key
            return self._rejected(error)
        key = self._key_of(data)
        if key == self._key and not force:
            return None
        self._key = key
        try:
            config = await self._parse(data)
        except ConfigError as error:
            return self._rejected(error)
        self.error = None
        return config

    def directories(self) -> set[Path]:
        """Where events may mean a change: the file's directory, and its target's."""
        path = self.path.absolute()
        return {path.parent, Path(os.path.realpath(path)).parent}

    def close(self) -> None:
        self._parser.close()

    def _rejected(self, error: ConfigError) -> Rejected:
        self.error = str(error)
        return Rejected(error)

    async def _parse(self, data: bytes) -> Config:
        # In a child process, bounded in time and memory: a hostile file can neither
        # stall the event loop (every resource's Allocate) nor exhaust the node.
        return await self._parser.parse_async(
            data, source=str(self.path), default_domain=self.domain, node_name=self.node_name,
            fleet=self.fleet,
        )  # fmt: skip

    def _key_of(self, data: bytes) -> Key:
        try:
            st = os.stat(self.path)
            mode, uid = st.st_mode, st.st_uid
        except OSError:
            mode, uid = -1, -1
        return hashlib.sha256(data).hexdigest(), mode, uid
