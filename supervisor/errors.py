"""Domain errors of the supervisor, raised with enough context to act on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Path_ = tuple[str | int, ...]
"""Where a value stands in the config: keys and list indexes from the top."""
LineOf = Callable[[Path_], int | None]
"""The 1-based line a path appears on, if known."""


def field_name(path: Path_) -> str:
    """``("devices", 3, "model")`` -> ``devices[3].model``."""
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
    return text


def no_lines(path: Path_) -> int | None:
    return None


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config, located as precisely as we can."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class ConfigError(Exception):
    """The config cannot be used; `problems` lists everything found, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.line or 0, p.field))
        super().__init__("\n".join(str(p) for p in self.problems))
