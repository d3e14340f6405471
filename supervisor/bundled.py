"""The example configs shipped inside the package, one per feature.

In the source tree they live in ``config/examples/`` (where users read them);
``supervisor/examples`` is a symlink to that directory, so the wheel and the image
carry the same files. Read them only through this module (importlib.resources), so
an installed package, a zip or the checkout all work alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib.resources import as_file, files
from importlib.resources.abc import Traversable
from pathlib import Path

DEMO_EXAMPLE = "multi.yml"
DRA_DEMO_EXAMPLE = "dra.yml"


def _directory() -> Traversable:
    return files("supervisor") / "examples"


def example_names() -> list[str]:
    """Every bundled example's file name, sorted."""
    return sorted(e.name for e in _directory().iterdir() if e.name.endswith(".yml"))


def example_text(name: str) -> str:
    """The text of one bundled example; KeyError names the ones that exist."""
    if name not in example_names():
        raise KeyError(f"no bundled example {name!r}; there are: {', '.join(example_names())}")
    return (_directory() / name).read_text(encoding="utf-8")


def summary(name: str) -> str:
    """The first sentence of the example's leading comment (what it shows), or ""."""
    words = []
    for line in example_text(name).splitlines():
        if not line.startswith("#"):
            break
        words.append(line.lstrip("#").strip())
    text = " ".join(words)
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


@contextlib.contextmanager
def example_file(name: str) -> Iterator[Path]:
    """A real file holding the example for as long as the context lasts."""
    example_text(name)  # raise the helpful KeyError for unknown names
    with as_file(_directory() / name) as path:
        yield path
