"""Figures, their targets, the printed table and the JSON record of one run.

Owns how a figure is judged against its target and how a run is described (machine,
Python, commit), so that results from different days can be compared honestly.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True, slots=True)
class Row:
    """One reported figure; `limit` is the target (value must be <= limit), if any.
    A `proposed` target (one no issue set) is judged and shown, but fails no run."""

    section: str
    name: str
    value: float
    unit: str
    limit: float | None = None
    note: str = ""
    proposed: bool = False

    @property
    def met(self) -> bool | None:
        return None if self.limit is None else self.value <= self.limit


@dataclass
class Report:
    quick: bool
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, *args: Any, **kwargs: Any) -> None:
        self.rows.append(Row(*args, **kwargs))

    @property
    def missed(self) -> list[Row]:
        return [r for r in self.rows if r.met is False and not r.proposed]

    def table(self) -> str:
        header = ("section", "figure", "value", "target", "met")
        lines = [header]
        for row in self.rows:
            target = "" if row.limit is None else f"<= {_fmt(row.limit, row.unit)}"
            if row.proposed and row.limit is not None:
                target += " (proposed)"
            met = {None: "", True: "met", False: "NOT MET"}[row.met]
            if self.quick and row.met is not None:
                met = f"({met}; quick)"
            name = f"{row.name} [{row.note}]" if row.note else row.name
            lines.append((row.section, name, _fmt(row.value, row.unit), target, met))
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        out = []
        for index, line in enumerate(lines):
            out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
            if index == 0:
                out.append("  ".join("-" * w for w in widths))
        return "\n".join(text.rstrip() for text in out)

    def write_json(self, directory: Path = RESULTS_DIR) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        path = directory / f"{stamp}{'-quick' if self.quick else ''}.json"
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "mode": "quick" if self.quick else "full",
            "machine": machine(),
            "rows": [{**asdict(r), "met": r.met} for r in self.rows],
            "details": self.details,
        }
        path.write_text(json.dumps(record, indent=2) + "\n")
        return path


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        if value < 0.001:
            return f"{value * 1e6:.0f} us"
        return f"{value * 1000:.1f} ms" if value < 10 else f"{value:.2f} s"
    if unit == "bytes":
        return f"{value / 2**20:.1f} MiB"
    if unit == "%":
        return f"{value:.2f} %"
    if unit == "x":
        return f"{value:.3f}x"
    if unit == "/s":
        return f"{value:,.0f}/s" if value >= 100 else f"{value:.2f}/s"
    return f"{value:g} {unit}".strip()


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle
                          if line.startswith("model name")), "")  # fmt: skip
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as handle:
            mem_kib = int(handle.readline().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kib = 0
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 2**20, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=5, check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
