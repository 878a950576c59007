"""compose.yaml validates with docker-compose and describes the production deployment."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]  # the checkout (this file is tests/integration/...)
COMPOSE = ROOT / "compose.yaml"
DOCKER_COMPOSE = shutil.which("docker-compose")

pytestmark = pytest.mark.skipif(
    DOCKER_COMPOSE is None,
    reason="docker-compose binary not found (CI installs it with apt-get install docker-compose)",
)


def _yaml_to_data(text: str) -> dict[str, Any]:
    return yaml.safe_load(text)


def _compose_config(**extra_env: str) -> subprocess.CompletedProcess[str]:
    assert DOCKER_COMPOSE is not None
    env = {k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"}
    env.update(extra_env)
    return subprocess.run(
        [DOCKER_COMPOSE, "-f", str(COMPOSE), "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    result = _compose_config(POSTGRES_PASSWORD="not-a-real-password")
    assert result.returncode == 0, result.stderr
    return _yaml_to_data(result.stdout)


def test_services_present(config: dict[str, Any]) -> None:
    assert {"kafka", "postgres", "migrate", "ingress", "worker"} <= set(config["services"])


def test_worker_has_two_replicas(config: dict[str, Any]) -> None:
    assert config["services"]["worker"]["deploy"]["replicas"] == 2


def test_named_volumes(config: dict[str, Any]) -> None:
    assert {"kafka-data", "postgres-data", "ingress-spool"} <= set(config.get("volumes") or {})
    services = config["services"]

    def sources(name: str) -> set[str]:
        found = set()
        for volume in services[name].get("volumes", []):
            found.add(volume["source"] if isinstance(volume, dict) else volume.split(":", 1)[0])
        return found

    assert "kafka-data" in sources("kafka")
    assert "postgres-data" in sources("postgres")


def test_healthchecks(config: dict[str, Any]) -> None:
    services = config["services"]
    for name in ("kafka", "postgres", "ingress"):
        test = services[name]["healthcheck"]["test"]
        assert test and test != ["NONE"], name
    assert "kafka-broker-api-versions.sh" in " ".join(services["kafka"]["healthcheck"]["test"])
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "/healthz" in " ".join(services["ingress"]["healthcheck"]["test"])
    assert "6066/healthz" in " ".join(services["worker"]["healthcheck"]["test"])


def test_dependencies_and_commands(config: dict[str, Any]) -> None:
    services = config["services"]
    assert services["migrate"]["command"] == ["canvas-stream", "migrate"]
    for name in ("ingress", "worker"):
        deps = services[name]["depends_on"]
        assert deps["kafka"]["condition"] == "service_healthy"
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["command"] == ["canvas-stream", name]
        env = services[name]["environment"]
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["DATABASE_URL"] == (
            "postgresql+asyncpg://canvas:not-a-real-password@postgres:5432/canvas_stream"
        )
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "not-a-real-password"


def test_password_is_required() -> None:
    result = _compose_config()
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


def test_no_secret_in_repo_files() -> None:
    text = COMPOSE.read_text()
    assert "${POSTGRES_PASSWORD:?" in text
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER " in dockerfile and "PASSWORD" not in dockerfile


def test_tenant_binding_is_passed_through(config: dict[str, Any]) -> None:
    for name in ("ingress", "sqs"):
        env = config["services"][name]["environment"]
        assert "LIVE_EVENTS_ROOT_ACCOUNT_UUIDS" in env and "LIVE_EVENTS_SUBSCRIPTION_IDS" in env, name


def test_sqs_source_runs_under_its_profile(config: dict[str, Any]) -> None:
    sqs = config["services"]["sqs"]
    assert sqs["profiles"] == ["sqs"]
    assert sqs["command"] == ["canvas-stream", "sqs"]
    assert "8081/healthz" in " ".join(sqs["healthcheck"]["test"])
    assert sqs["depends_on"]["kafka"]["condition"] == "service_healthy"
    env = sqs["environment"]
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092" and "SQS_QUEUE_URLS" in env and "AWS_DEFAULT_REGION" in env
    assert "DATABASE_URL" not in env  # it never touches the warehouse
