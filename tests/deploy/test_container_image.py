"""The container image, without a Docker engine: lint the Dockerfile, check what it promises,
and replay its two stages by hand (build the wheel from what it COPYs, install only the wheel
into a fresh venv, run the console script there).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from chart_render import CHART_DIR, REPO_ROOT

from supervisor.config import load_config

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


@pytest.fixture(scope="module")
def installed_cli(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Docker build by hand: the builder's inputs -> wheel -> fresh venv -> console script.

    The context holds exactly what the builder stage COPYs, copied as Docker copies it
    (a symlink stays a symlink), so a file the wheel needs but the Dockerfile leaves out
    fails here.
    """
    tmp_path = tmp_path_factory.mktemp("image")
    context = tmp_path / "context"
    context.mkdir()
    for source in copy_sources():
        path = REPO_ROOT / source
        assert path.exists(), f"the Dockerfile COPYs {source}, which does not exist"
        (context / source).parent.mkdir(parents=True, exist_ok=True)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        if path.is_dir():
            shutil.copytree(path, context / source, ignore=ignore, symlinks=True)
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
    names = zipfile.ZipFile(wheel).namelist()
    top_levels = {name.split("/")[0] for name in names}
    assert {"supervisor", "plugin_worker"} <= top_levels
    assert not top_levels & {"tests", "charts", "bench", "scripts", "config"}
    shipped = sorted(n.removeprefix("supervisor/examples/") for n in names
                     if n.startswith("supervisor/examples/"))  # fmt: skip
    assert shipped == sorted(p.name for p in (REPO_ROOT / "config" / "examples").glob("*.yml"))

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
    return venv / "bin" / "widget-supervisor"


def run_cli(cli: Path, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed console script, run outside the repository (nothing imported from it)."""
    return subprocess.run(
        [cli, *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


@pytest.mark.slow
@pytest.mark.network
def test_wheel_installs_alone_and_runs(installed_cli: Path, tmp_path: Path) -> None:
    version = run_cli(installed_cli, "--version", cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert package_version() in version.stdout

    config = tmp_path / "config.yaml"
    chart_values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    config.write_text(yaml.safe_dump(chart_values["config"]))
    config.chmod(0o444)
    validate = run_cli(installed_cli, "validate", "--config", config, cwd=tmp_path)
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert "snaffler-v1" in validate.stdout

    broken = tmp_path / "broken.yaml"
    broken.write_text("devices:\n  - model: v1\n    device: /dev/wibble1\n")
    refused = run_cli(
        installed_cli, "validate", "--config", broken, "--no-strict-perms", cwd=tmp_path
    )
    assert refused.returncode == 1
    assert "type" in refused.stdout + refused.stderr


@pytest.mark.slow
@pytest.mark.network
def test_installed_package_validates_every_shipped_example(
    installed_cli: Path, tmp_path: Path
) -> None:
    listing = run_cli(installed_cli, "examples", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    names = [line.split()[0] for line in listing.stdout.splitlines()]
    assert names == sorted(p.name for p in (REPO_ROOT / "config" / "examples").glob("*.yml"))
    for name in names:
        shown = run_cli(installed_cli, "examples", name, cwd=tmp_path)
        assert shown.stdout == (REPO_ROOT / "config" / "examples" / name).read_text()
        copy = tmp_path / name
        copy.write_text(shown.stdout)
        copy.chmod(0o644)
        checked = run_cli(installed_cli, "validate", "--config", copy, cwd=tmp_path)
        assert checked.returncode == 0, f"{name}: {checked.stdout}{checked.stderr}"


def run_demo_until_ctrl_c(cli: Path, cwd: Path, *args: str) -> str:
    """`demo ARGS` until it says it serves, then Ctrl-C; its output (exit code 0 asserted)."""
    demo = subprocess.Popen(
        [cli, "demo", *args, "--metrics-address", "127.0.0.1:0"],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert demo.stdout is not None
    lines: list[str] = []
    for line in demo.stdout:  # pytest-timeout bounds a demo that never gets there
        lines.append(line)
        if "serving until Ctrl-C" in line:
            break
    demo.send_signal(signal.SIGINT)
    rest, _ = demo.communicate(timeout=15)
    output = "".join(lines) + rest
    assert demo.returncode == 0, output
    return output


@pytest.mark.slow
@pytest.mark.network
def test_installed_demo_runs_from_an_empty_directory(installed_cli: Path, tmp_path: Path) -> None:
    """`widget-supervisor demo` from the wheel alone: every resource of the bundled multi.yml
    is shown and allocated from once, and Ctrl-C ends it with exit code 0."""
    empty = tmp_path / "empty"
    empty.mkdir()
    output = run_demo_until_ctrl_c(installed_cli, empty)
    expected = sorted(
        s.name for s in load_config(REPO_ROOT / "config" / "examples" / "multi.yml").resources
    )
    for resource in expected:
        assert re.search(rf"^{re.escape(resource)}\s", output, re.MULTILINE), output
        assert f"allocated from {resource}:" in output, output
    assert list(empty.iterdir()) == [], "the demo writes only into its own temp dir"


@pytest.mark.slow
@pytest.mark.network
def test_installed_dra_demo_runs_from_an_empty_directory(
    installed_cli: Path, tmp_path: Path
) -> None:
    """`widget-supervisor demo --api dra` from the wheel alone: the API-server and kubelet
    stand-ins ship in it, the slices of the bundled dra.yml are shown, a claim of each DRA
    resource is prepared, and Ctrl-C ends it with exit code 0."""
    empty = tmp_path / "empty"
    empty.mkdir()
    output = run_demo_until_ctrl_c(installed_cli, empty, "--api", "dra")
    for resource in ("gizmo-mk2", "snaffler-v1"):
        assert re.search(rf"claim demo/{resource}: .* kubelet prepared it", output), output
    assert "env WIDGET_VISIBLE_DEVICES=/dev/wibble0" in output, output
    assert list(empty.iterdir()) == [], "the demo writes only into its own temp dir"
