"""The dashboard and the alerts only use metric names the service exports."""

from __future__ import annotations

import json
import pathlib
import re
import tomllib

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from mana_llm.metrics import Metrics
from mana_llm.settings_groups import SAMPLERS

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


# --- Kubernetes, Compose, .env.example: offline checks ---------------------------------

INTERNAL = {"MANA_LLM_WORKER", "MANA_LLM_WORKERS"}  # the supervisor sets them for its workers


def gateway_variables() -> set[str]:
    """Every variable the gateway reads: the quoted names in the settings reader."""
    source = (ROOT / "mana_llm/settings.py").read_text()
    source += (ROOT / "mana_llm/settings_groups.py").read_text()
    source += (ROOT / "mana_llm/provider_settings.py").read_text()
    levels = {"DEBUG", "INFO", "WARNING", "ERROR", "TEXT", "JSON", "LEAST_BUSY", "ROUND_ROBIN"}
    levels |= {"LOCAL", "DENY", "NONE", "OTLP", "CONSOLE", *SAMPLERS}
    return set(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', source)) - levels - INTERNAL


def readme_variables() -> set[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Configuration") : text.index("## Development")]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row)}


def env_example_variables() -> set[str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return {m.group(1) for line in lines if (m := re.match(r"#? ?([A-Z][A-Z0-9_]+)=", line))}


def manifests() -> list[pathlib.Path]:
    return sorted(p for p in (ROOT / "deploy/kubernetes").rglob("*.yaml"))


def test_the_readme_env_example_and_the_gateway_agree_on_every_variable() -> None:
    assert readme_variables() == gateway_variables()
    assert env_example_variables() == gateway_variables()


def test_every_kubernetes_manifest_validates_strictly() -> None:
    import kubernetes_validate

    for path in manifests():
        for document in yaml.safe_load_all(path.read_text()):
            if document["kind"] == "Kustomization":
                listed = {*document.get("resources", ())}
                assert listed <= {p.name for p in path.parent.iterdir()} | {"redis"}
                continue
            kubernetes_validate.validate(document, "1.31", strict=True)


def test_the_deployment_sets_only_variables_the_gateway_reads_and_drains_in_time() -> None:
    deployment = yaml.safe_load((ROOT / "deploy/kubernetes/deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {item["name"]: item for item in container["env"]}
    assert set(env) <= gateway_variables()
    drain = int(env["DRAIN_DELAY"]["value"]) + int(env["GRACEFUL_TIMEOUT"]["value"])
    assert pod["terminationGracePeriodSeconds"] > drain
    assert env["WORKERS"]["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    keys = [
        v["valueFrom"]["secretKeyRef"]
        for v in env.values()
        if "secretKeyRef" in v.get("valueFrom", {})
    ]
    assert {k["key"] for k in keys} >= {"GROQ_API_KEY", "OPENROUTER_API_KEY", "TOGETHER_API_KEY"}
    assert "ALIASES_WATCH_INTERVAL" in env
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"


def test_the_compose_files_point_at_the_real_image_port_and_variables() -> None:
    full = yaml.safe_load((ROOT / "deploy/compose/docker-compose.yml").read_text())
    gateway = full["services"]["mana-llm"]
    assert gateway["ports"] == ["3025:3025"]
    assert set(gateway["environment"]) <= gateway_variables()
    assert (ROOT / "deploy/compose" / gateway["build"]["context"] / "Dockerfile").is_file()
    assert {"redis", "prometheus", "grafana", "jaeger"} <= set(full["services"])
    assert gateway["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    for service in ("prometheus", "grafana"):
        for volume in full["services"][service]["volumes"]:
            assert (ROOT / "deploy/compose" / volume.split(":")[0]).is_file(), volume
    scrape = yaml.safe_load((ROOT / "deploy/compose/prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["mana-llm:3025"]
    dev = yaml.safe_load((ROOT / "deploy/compose/docker-compose.dev.yml").read_text())
    assert list(dev["services"]) == ["redis"]


def test_compose_reaches_an_ollama_on_the_host_or_in_the_stack() -> None:
    """Inside a container localhost is the container: the gateway is pointed at the host
    (host.docker.internal, mapped to the host gateway so it resolves on Linux too), and the
    ollama override runs Ollama as a service and points the gateway at it."""
    full = yaml.safe_load((ROOT / "deploy/compose/docker-compose.yml").read_text())
    gateway = full["services"]["mana-llm"]
    assert "host.docker.internal:host-gateway" in gateway["extra_hosts"]
    assert gateway["environment"]["OLLAMA_URL"] == "http://host.docker.internal:11434"
    assert gateway["env_file"] == [{"path": "../../.env", "required": False}]
    text = (ROOT / "deploy/compose/docker-compose.yml").read_text()
    assert "Docker Compose 2.24.0" in text  # what the env_file form needs, said where it is
    ollama = yaml.safe_load((ROOT / "deploy/compose/docker-compose.ollama.yml").read_text())
    assert ollama["services"]["mana-llm"]["environment"] == {"OLLAMA_URL": "http://ollama:11434"}
    assert ollama["services"]["ollama"]["image"].startswith("ollama/ollama")
    assert "ollama" in ollama["services"]["mana-llm"]["depends_on"]


def test_the_kubernetes_configmap_carries_aliases_yaml_word_for_word() -> None:
    configmap = yaml.safe_load((ROOT / "deploy/kubernetes/configmap.yaml").read_text())
    assert configmap["data"]["aliases.yaml"] == (ROOT / "aliases.yaml").read_text()


def test_the_dockerfile_stops_gracefully_and_checks_liveness() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "STOPSIGNAL SIGTERM" in text and "/livez" in text
    assert text.index("pip install -r") < text.index("COPY mana_llm")  # dependencies cached apart
    assert "COPY README.md LICENSE ./" in text  # the package's metadata names both


def test_version_is_the_packages_and_the_license_is_apache_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mana_llm.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert capsys.readouterr().out == f"mana-llm {project['version']}\n"
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {project['version']} - " in changelog and "## Unreleased" in changelog
