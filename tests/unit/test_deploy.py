"""The dashboard and the alerts only use metric names the service exports."""

from __future__ import annotations

import json
import pathlib
import re

import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from mana_llm.metrics import Metrics

ROOT = pathlib.Path(__file__).resolve().parents[2]
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_names() -> set[str]:
    registry = CollectorRegistry()
    Metrics(registry)
    families: list[Metric] = list(registry.collect())
    return {f.name + suffix for f in families for suffix in SUFFIXES[f.type]}


def used_names(text: str) -> set[str]:
    return set(re.findall(r"\bmana_llm_[a-z_]+\b", text))


def dashboard_exprs() -> list[str]:
    data = json.loads((ROOT / "deploy/grafana/mana-llm.json").read_text())
    return [t["expr"] for p in data["panels"] for t in p["targets"]]


def alert_exprs() -> list[str]:
    data = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    return [rule["expr"] for group in data["groups"] for rule in group["rules"]]


def test_dashboard_uses_only_exported_metrics() -> None:
    used = used_names("\n".join(dashboard_exprs()))
    assert len(used) >= 10
    assert used <= exported_names(), used - exported_names()


def test_alerts_use_only_exported_metrics() -> None:
    used = used_names("\n".join(alert_exprs()))
    assert len(used) >= 4
    assert used <= exported_names(), used - exported_names()


def test_the_check_sees_a_wrong_name() -> None:
    assert used_names("rate(mana_llm_requests_total[5m])") - exported_names() == {
        "mana_llm_requests_total"
    }
