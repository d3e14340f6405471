"""The container image, without a Docker engine: lint the Dockerfile, check what it promises,
and replay its two stages by hand (build the wheel from what it COPYs, install only the wheel
into a fresh venv, run the console script there).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from chart_render import CHART_DIR, REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def stages() -> list[list[tuple[str, str]]]:
    split: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            split.append([])
        if split:
            split[-1].append((keyword, rest))
    return split


def copy_sources() -> list[str]:
    """Every local path the builder stage COPYs from the build context."""
    sources = []
    for keyword, rest in stages()[0]:
        if keyword == "COPY" and "--from" not in rest:
            *paths, _dest = rest.split()
            sources += [p.rstrip("/") for p in paths]
    return sources


def package_version() -> str:
    text = (REPO_ROOT / "supervisor" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    assert match is not None
    return match.group(1)


def test_hadolint_passes(hadolint: str) -> None:
    done = subprocess.run(
        [hadolint, "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_catches_a_bad_dockerfile(hadolint: str, tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install build\nUSER root\n")
    done = subprocess.run(
        [hadolint, str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "DL3007" in done.stdout  # the :latest tag


def test_dockerfile_is_multi_stage_and_the_final_stage_installs_only_the_wheel() -> None:
    builder, final = stages()
    assert builder[0][1].endswith("AS builder")
    assert any(k == "RUN" and "python -m build --wheel" in r for k, r in builder)
    final_runs = [r for k, r in final if k == "RUN"]
    assert len(final_runs) == 1
    assert "pip install --no-cache-dir /dist/*.whl" in final_runs[0]
    assert "from=builder" in final_runs[0]
    final_text = " ".join(r for _, r in final)
    for tool in ("apt-get", "gcc", "build-essential", "pip install --no-cache-dir build"):
        assert tool not in final_text, tool
    assert not any(k == "COPY" for k, _ in final), "the final stage copies nothing in"


def test_base_image_is_a_slim_python_311_or_newer() -> None:
    (arg,) = [r for k, r in instructions() if k == "ARG" and r.startswith("PYTHON_IMAGE=")]
    match = re.fullmatch(r"PYTHON_IMAGE=python:3\.(\d+)-slim(-\w+)?", arg)
    assert match is not None, arg
    assert int(match.group(1)) >= 11, arg


def test_entrypoint_cmd_port_and_labels() -> None:
    final = dict(stages()[-1])
    assert final["ENTRYPOINT"] == '["widget-supervisor"]'
    assert final["CMD"] == '["run", "--config", "/etc/widget-plugin/config.yaml"]'
    assert final["EXPOSE"] == "9464"
    labels = final["LABEL"]
    for key in ("title", "description", "version", "revision", "created", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, key


def test_root_user_is_explained_not_accidental() -> None:
    assert not [r for k, r in instructions() if k == "USER"]
    text = DOCKERFILE.read_text()
    assert "Runs as root, on purpose" in text
    assert "/var/lib/kubelet/device-plugins" in text


def test_versions_agree() -> None:
    version = package_version()
    (arg,) = [r for k, r in instructions() if k == "ARG" and r.startswith("VERSION=")]
    assert arg == f"VERSION={version}"
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert chart["appVersion"] == version
    assert chart["apiVersion"] == "v2"


def test_dockerignore_lets_in_exactly_what_is_copied() -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allow-list starts by ignoring everything"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == set(copy_sources())


def test_copied_sources_cover_the_packages() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    includes = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in includes}
    assert packages <= set(copy_sources())
    readme = pyproject["project"].get("readme")
    if readme:
        assert readme in copy_sources()


@pytest.mark.slow
@pytest.mark.network
def test_wheel_installs_alone_and_runs(tmp_path: Path) -> None:
    """The Docker build by hand: the builder's inputs -> wheel -> fresh venv -> console script."""
    context = tmp_path / "context"
    context.mkdir()
    for source in copy_sources():
        path = REPO_ROOT / source
        assert path.exists(), f"the Dockerfile COPYs {source}, which does not exist"
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        if path.is_dir():
            shutil.copytree(path, context / source, ignore=ignore)
        else:
            shutil.copy2(path, context / source)
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(context)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = dist.glob("*.whl")
    assert wheel.name == f"widget_device_plugin-{package_version()}-py3-none-any.whl"
    top_levels = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {"supervisor", "plugin_worker"} <= top_levels
    assert not top_levels & {"tests", "charts", "bench", "scripts"}

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", wheel],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]

    cli = venv / "bin" / "widget-supervisor"
    # Run outside the repository, so nothing is imported from the source tree.
    version = subprocess.run(
        [cli, "--version"], capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False
    )
    assert version.returncode == 0, version.stderr
    assert package_version() in version.stdout

    config = tmp_path / "config.yaml"
    chart_values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    config.write_text(yaml.safe_dump(chart_values["config"]))
    config.chmod(0o444)
    validate = subprocess.run(
        [cli, "validate", "--config", config],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert "snaffler-v1" in validate.stdout

    broken = tmp_path / "broken.yaml"
    broken.write_text("devices:\n  - model: v1\n    device: /dev/wibble1\n")
    refused = subprocess.run(
        [cli, "validate", "--config", broken, "--no-strict-perms"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert refused.returncode == 1
    assert "type" in refused.stdout + refused.stderr
