"""Run dbt against the warehouse with the project's own DATABASE_URL (the I/O edge of the dbt layer).

dbt lives in a virtual environment of its own (``.venv-dbt``, from ``dbt/requirements.txt``): its
pinned dependencies clash with the project's. Its connection profile is generated from the
database URL into a private temporary directory for each run; the password never enters that
file but reaches dbt as ``DBT_ENV_SECRET_PASSWORD``, which dbt masks in its logs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from sqlalchemy.engine import make_url

from canvas_stream.dbt_sources import SCHEMA_ENV
from processors.warehouse import tables

PROFILE_NAME = "canvas_stream"  # must match `profile:` in dbt/dbt_project.yml
DEFAULT_TARGET_SCHEMA = "analytics"
PASSWORD_ENV = "DBT_ENV_SECRET_PASSWORD"
VENV_DIR = ".venv-dbt"


def _scalar(value: str) -> str:
    """A YAML single-quoted scalar."""
    return "'" + value.replace("'", "''") + "'"


def render_profile(database_url: str, target_schema: str = DEFAULT_TARGET_SCHEMA, threads: int = 4) -> str:
    """profiles.yml for one PostgreSQL database; the password is read from the environment by dbt."""
    url = make_url(database_url)
    if not url.database:
        raise ValueError("the database URL names no database")
    fields = {
        "type": "postgres",
        "host": url.host or str(url.query.get("host") or "localhost"),
        "port": url.port or 5432,
        "user": url.username or "postgres",
        "password": f"{{{{ env_var('{PASSWORD_ENV}', '') }}}}",
        "dbname": url.database,
        "schema": target_schema,
        "threads": threads,
    }
    sslmode = url.query.get("sslmode") or url.query.get("ssl")
    if sslmode:
        fields["sslmode"] = str(sslmode)
    body = "\n".join(
        f"      {key}: {value if isinstance(value, int) else _scalar(str(value))}" for key, value in fields.items()
    )
    return f"{PROFILE_NAME}:\n  target: warehouse\n  outputs:\n    warehouse:\n{body}\n"


def dbt_environment(database_url: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a dbt process: the password, the warehouse schema, no usage tracking."""
    env = dict(os.environ if base is None else base)
    env[PASSWORD_ENV] = make_url(database_url).password or ""
    env.setdefault(SCHEMA_ENV, tables.SCHEMA)
    env["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    return env


def find_dbt(project_dir: Path) -> str:
    """The dbt executable: the project's own virtual environment first, then PATH."""
    own = project_dir.resolve().parent / VENV_DIR / "bin" / "dbt"
    if own.exists():
        return str(own)
    found = shutil.which("dbt")
    if found is None:
        raise FileNotFoundError(
            f"no dbt: create {VENV_DIR} (python -m venv {VENV_DIR} && "
            f"{VENV_DIR}/bin/pip install -r dbt/requirements.txt) or put dbt on PATH"
        )
    return found


def run_dbt(
    args: Sequence[str],
    database_url: str,
    *,
    project_dir: Path,
    dbt_executable: str | None = None,
    target_schema: str = DEFAULT_TARGET_SCHEMA,
    env: Mapping[str, str] | None = None,
    capture: bool = False,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """``dbt ARGS`` on the dbt project, with a profile for ``database_url`` in a private temp directory."""
    project_dir = project_dir.resolve()
    executable = dbt_executable or find_dbt(project_dir)
    with tempfile.TemporaryDirectory(prefix="canvas-stream-dbt-profile-") as profiles_dir:
        Path(profiles_dir, "profiles.yml").write_text(render_profile(database_url, target_schema))
        command = [executable, *args, "--project-dir", str(project_dir), "--profiles-dir", profiles_dir]
        return subprocess.run(
            command,
            env=dbt_environment(database_url, env),
            cwd=project_dir,
            text=True,
            capture_output=capture,
            timeout=timeout,
            check=False,
        )
