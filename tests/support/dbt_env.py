"""dbt's own virtual environment for the tests: ``<repo>/.venv-dbt`` from ``dbt/requirements.txt``.

Created when missing, rebuilt when the requirements changed (their hash is stamped in the venv last,
so a half-built venv is never reused), shared across test sessions behind a file lock. .ci/run
builds it before the tests with ``python -m tests.support.dbt_env``, so its install time is not
counted in a test's.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "dbt" / "requirements.txt"
VENV = ROOT / ".venv-dbt"
STAMP = VENV / ".requirements.sha256"


def _digest() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def dbt_executable() -> Path:
    return VENV / "bin" / "dbt"


def ensure_dbt_venv(timeout: float = 900) -> Path:
    """The dbt executable of an up-to-date ``.venv-dbt``; raises RuntimeError (with pip's output) if it fails."""
    digest = _digest()
    lock_path = ROOT / ".venv-dbt.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if STAMP.is_file() and STAMP.read_text().strip() == digest and dbt_executable().exists():
            return dbt_executable()
        shutil.rmtree(VENV, ignore_errors=True)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
        for command in ([sys.executable, "-m", "venv", str(VENV)], [*pip, "install", "-q", "-r", str(REQUIREMENTS)]):
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        STAMP.write_text(digest + "\n")
    return dbt_executable()


if __name__ == "__main__":
    print(ensure_dbt_venv())
