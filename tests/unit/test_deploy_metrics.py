"""The alert rules and the Grafana dashboard in deploy/ name only metrics the code exports, every
exported metric follows the Prometheus conventions, and docs/operations.md lists them all."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "canvas-stream.json"

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
            "offset", "inf", "nan", "le"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or labels."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges and subqueries
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)  # label lists
    names = set()
    for match in re.finditer(r"\d[\w.]*|[A-Za-z_:][\w:]*", expr):
        token = match.group()
        if token[0].isdigit() or token.lower() in KEYWORDS:
            continue
        if re.match(r"\s*\(", expr[match.end():]):  # a function or an aggregation
            continue
        names.add(token)
    return names


def test_the_parser_finds_metrics_and_nothing_else():
    expr = ('histogram_quantile(0.99, sum by (le, route) (rate(a_seconds_bucket{route=~"/x|y"}[5m]))) > 5 '
            "and on (kind) group_left 0.5 * max by (kind) (b) or vector(0) and deriv(sum(c)[15m:1m]) > 0")
    assert metric_names(expr) == {"a_seconds_bucket", "b", "c"}


def alert_expressions() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                found.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(DASHBOARD.read_text()))
    return found


def exported_names() -> dict[str, str]:
    """Every sample name the code can expose, mapped to its metric type (after importing every module
    that registers metrics)."""
    import canvas_stream.metrics  # noqa: F401
    import ingest.admin
    import ingest.lti_routes
    import ingest.sqs  # noqa: F401
    import processors.app  # noqa: F401

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",),
                "summary": ("", "_count", "_sum"), "info": ("_info",)}
    names: dict[str, str] = {}
    for family in REGISTRY.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names[family.name + suffix] = family.type
    return names


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_metric_named_in_deploy_is_exported(source):
    expressions = alert_expressions() if source == "alerts" else dashboard_expressions()
    assert len(expressions) >= 10
    used = set().union(*(metric_names(e) for e in expressions))
    ours = {n for n in used if n.startswith("canvas_stream_")}
    assert ours, used
    assert used == ours, f"names that are not canvas-stream metrics: {used - ours}"
    missing = ours - exported_names().keys()
    assert not missing, f"{source} names metrics the code does not export: {sorted(missing)}"


def test_the_alerts_cover_what_the_issue_asks_for():
    text = ALERTS.read_text()
    for alert in ("CanvasTimeoutBudget", "CanvasErrorBudget", "WorkerLagGrowing", "WorkerNoCommitWhileLagging",
                  "QuarantineGrowing", "SpoolNotDraining", "NoEventsReceived"):
        assert f"alert: {alert}" in text


def test_metric_names_follow_prometheus_conventions():
    exported = exported_names()
    ours = {name: kind for name, kind in exported.items() if name.startswith("canvas_stream_")}
    families = {re.sub(r"_(total|bucket|count|sum)$", "", n) if k in ("counter", "histogram") else n: k
                for n, k in ours.items()}
    for name, kind in families.items():
        assert re.fullmatch(r"canvas_stream_[a-z0-9_]+", name), name
        if kind == "histogram":
            assert name.endswith(("_seconds", "_bytes")), f"{name}: a histogram names its base unit"
        assert not re.search(r"_(ms|milliseconds|minutes|hours|kb|mb)(_|$)", name), f"{name}: not a base unit"
    request = REGISTRY._names_to_collectors["canvas_stream_ingress_request_duration_seconds"]
    assert "code" in request._labelnames and "status" not in request._labelnames
    assert max(b for b in request._upper_bounds if b != float("inf")) >= 30


def test_operations_doc_lists_every_metric():
    doc = (ROOT / "docs" / "operations.md").read_text()
    ours = [n for n in exported_names() if n.startswith("canvas_stream_")]
    families = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in ours}
    missing = sorted(f for f in families if f not in doc)
    assert not missing, f"docs/operations.md does not mention {missing}"
