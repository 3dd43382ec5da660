"""Static checks of everything that deploys fraudwatch, all offline: docker-compose.yml against the Compose
Specification schema (vendored by check-jsonschema), its settings and ports against fraudwatch's Settings and
the documented ports; the Dockerfiles' hygiene; the kustomize overlays built and validated against pinned
Kubernetes schemas (kubernetes-validate) with structural checks for the CRDs; generated k8s files up to date."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from fraudwatch.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILES = {
    "fraudwatch-scorer-api": ROOT / "services" / "scorer-api" / "Dockerfile",
    "fraudwatch-stream": ROOT / "services" / "stream" / "Dockerfile",
    "fraudwatch-producer": ROOT / "services" / "producer" / "Dockerfile",
    "fraudwatch-review": ROOT / "services" / "review" / "Dockerfile",
    "fraudwatch-training": ROOT / "training" / "Dockerfile",
}
OVERLAYS = ("dev", "prod")
KUBERNETES_VERSION = "1.33.0"  # the oldest release we support; kubernetes-validate ships its schemas
# The published ports of docs (ARCHITECTURE "Services and ports"); 9093 is KRaft's controller, 4040 Spark's UI.
DOCUMENTED_PORTS = {
    "kafka": {9092},
    "mlflow": {5000},
    "scorer-api": {8000},
    "review": {8010},
    "stream": {9108, 4040},
    "producer": {9109},
    "redis": {6379},
    "prometheus": {9090},
    "grafana": {3000},
}
CRD_KINDS = {
    ("sparkoperator.k8s.io/v1beta2", "SparkApplication"),
    ("kafka.strimzi.io/v1beta2", "Kafka"),
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"),
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def settings_env_names() -> set[str]:
    return {f"FRAUDWATCH_{name.upper()}" for name in Settings.model_fields}


# --- docker-compose ---------------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    """check-jsonschema (a dev dependency) vendors the official compose-spec.json: no network needed."""
    proc = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_schema_check_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = compose()
    broken["services"]["redis"]["depends_on"] = {"kafka": {"condition": "service_started_eventually"}}
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    proc = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0


def test_compose_services_and_ports() -> None:
    services = compose()["services"]
    assert set(DOCUMENTED_PORTS) | {"kafka-init", "train"} == set(services)
    for name, ports in DOCUMENTED_PORTS.items():
        published = {int(str(p).split(":")[0]) for p in services[name].get("ports", [])}
        assert published == ports, name


def test_compose_fraudwatch_variables_are_settings_fields() -> None:
    known = settings_env_names()
    for name, service in compose()["services"].items():
        for variable in service.get("environment") or {}:
            if variable.startswith("FRAUDWATCH_"):
                assert variable in known, f"{name}: {variable} is not a field of fraudwatch.config.Settings"


def test_compose_settings_are_valid_settings() -> None:
    """The environment each fraudwatch service gets builds a valid Settings (validators included)."""
    for name in ("scorer-api", "stream", "producer", "train"):
        environment = compose()["services"][name]["environment"]
        values = {
            k.removeprefix("FRAUDWATCH_").lower(): v
            for k, v in environment.items()
            if k.startswith("FRAUDWATCH_")
        }
        settings = Settings(**values)
        assert settings.kafka_bootstrap == "kafka:19092"
        assert settings.store_backend == "redis"


def test_compose_startup_order_waits_for_health() -> None:
    services = compose()["services"]
    for name in ("scorer-api", "stream", "producer"):
        depends = services[name]["depends_on"]
        assert depends["kafka-init"]["condition"] == "service_completed_successfully", name
        assert all(
            d["condition"] in {"service_healthy", "service_completed_successfully"} for d in depends.values()
        )
    for name in DOCUMENTED_PORTS:
        assert "healthcheck" in services[name], f"{name} has no healthcheck"


def test_compose_creates_every_topic() -> None:
    script = "\n".join(compose()["services"]["kafka-init"]["command"])
    assert set(Settings().all_topics) <= set(re.split(r"[\s;]+", script))


def test_compose_images_are_pinned() -> None:
    for name, service in compose()["services"].items():
        image = service.get("image", "")
        if "build" in service or image.startswith("fraudwatch/"):
            continue
        assert re.fullmatch(r"[\w./-]+:[\w.-]*\d[\w.-]*", image), f"{name}: image {image!r} is not pinned"


def test_compose_mounts_exist() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"


# --- Dockerfiles ------------------------------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in (raw.strip() for raw in text.splitlines())
        if line and not line.startswith("#")
    ]


@pytest.mark.parametrize(("member", "path"), DOCKERFILES.items(), ids=list(DOCKERFILES))
def test_dockerfile_hygiene(member: str, path: Path) -> None:
    instructions = _instructions(path)
    stages = {args.split()[-1] for op, args in instructions if op == "FROM" and " AS " in args.upper()}
    for op, args in instructions:
        if op == "FROM":
            image = args.split()[0]
            if image in stages:
                continue
            assert re.fullmatch(r"[\w./-]+:[\w.-]*\d[\w.-]*(@sha256:[0-9a-f]{64})?", image), (
                f"unpinned {image}"
            )
            assert not image.endswith(":latest")
        if op == "COPY" and "--from=" not in args:
            for source in args.split()[:-1]:
                if not source.startswith("--"):
                    assert (ROOT / source).exists(), f"COPY {source}: not in the build context (repo root)"
    final_stage = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    users = [args for op, args in final_stage if op == "USER"]
    assert users, "the final stage must switch to a non-root USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    syncs = [args for op, args in instructions if op == "RUN" and "uv sync" in args]
    assert syncs, "dependencies must come from uv.lock"
    for args in syncs:
        assert "--frozen" in args
        assert "--no-dev" in args
        assert f"--package {member}" in args
    if any(op == "EXPOSE" for op, _ in final_stage):
        assert any(op == "HEALTHCHECK" for op, _ in final_stage)


def _locked_closure(package: str) -> set[str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    by_name = {p["name"]: p for p in lock["package"]}
    seen: set[str] = set()
    todo = [package]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        entry = by_name[name]
        todo.extend(d["name"] for d in entry.get("dependencies", []))
        for extra in {e for d in entry.get("dependencies", []) for e in d.get("extra", [])}:
            todo.extend(d["name"] for d in by_name[name].get("optional-dependencies", {}).get(extra, []))
    return seen


def test_api_image_carries_no_pyspark() -> None:
    """The API image installs fraudwatch-scorer-api's locked closure only; PySpark must not be in it."""
    closure = _locked_closure("fraudwatch-scorer-api")
    assert "fraudwatch" in closure
    assert "pyspark" not in closure
    assert "pyspark" in _locked_closure("fraudwatch-stream")  # the check can see pyspark where it is
    instructions = _instructions(DOCKERFILES["fraudwatch-scorer-api"])
    for op, args in instructions:
        assert "pyspark" not in args.lower(), f"{op} {args}"
        if op == "COPY":
            assert args.split()[0] in {"services/stream/pyproject.toml"} or "services/stream" not in args


def test_stream_image_spark_version_matches_the_pinned_one() -> None:
    versions = dict(
        line.split("=", 1)
        for line in (ROOT / "build" / "versions.env").read_text().splitlines()
        if "=" in line
    )
    assert (
        f"ARG SPARK_VERSION={versions['SPARK_VERSION'].strip()}"
        in DOCKERFILES["fraudwatch-stream"].read_text()
    )


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".local", ".venv"} <= set(ignored)


# --- Kubernetes -------------------------------------------------------------------------------------------


def _kustomize() -> str:
    for candidate in (shutil.which("kustomize"), ROOT / ".local" / "bin" / "kustomize"):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.skip("kustomize not installed: run scripts/install-k8s-tools.sh (installs into .local/bin)")


def build_overlay(overlay: str, tmp_path: Path) -> list[dict]:
    """kustomize build of a copy of k8s/ (the dev overlay gets its git-ignored secrets.env from the example)."""
    tree = tmp_path / "k8s"
    shutil.copytree(ROOT / "k8s", tree)
    example = tree / "overlays" / overlay / "secrets.env.example"
    if example.exists():
        shutil.copy(example, example.with_name("secrets.env"))
    proc = subprocess.run(
        [_kustomize(), "build", str(tree / "overlays" / overlay)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def _validate_builtin(resource: dict) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def _validate_crd(resource: dict) -> None:
    """No CRD schemas offline: check the shape that the operators need."""
    assert resource["metadata"]["name"]
    spec = resource["spec"]
    kind = resource["kind"]
    if kind == "SparkApplication":
        assert spec["type"] == "Python"
        assert spec["mode"] == "cluster"
        assert spec["mainApplicationFile"].startswith("local:///")
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", spec["image"])
        for role in ("driver", "executor"):
            assert spec[role]["securityContext"]["runAsNonRoot"] is True
            mounts = {m["name"] for m in spec[role]["volumeMounts"]}
            assert mounts <= {v["name"] for v in spec["volumes"]}
    elif kind in {"KafkaTopic", "KafkaNodePool"}:
        assert resource["metadata"]["labels"]["strimzi.io/cluster"] == "fraudwatch"
    elif kind == "Kafka":
        assert resource["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
        assert resource["metadata"]["annotations"]["strimzi.io/node-pools"] == "enabled"
    elif kind == "ServiceMonitor":
        assert spec["selector"]["matchLabels"]
        assert spec["endpoints"]
    elif kind == "PrometheusRule":
        assert spec["groups"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_overlays_build_and_validate(overlay: str, tmp_path: Path) -> None:
    resources = build_overlay(overlay, tmp_path)
    kinds = {(r["apiVersion"], r["kind"]) for r in resources}
    assert kinds >= CRD_KINDS
    for resource in resources:
        where = f"{resource['kind']}/{resource['metadata']['name']}"
        if (resource["apiVersion"], resource["kind"]) in CRD_KINDS:
            _validate_crd(resource)
        else:
            try:
                _validate_builtin(resource)
            except Exception as error:  # report which resource failed, and why
                raise AssertionError(f"{overlay}: {where}: {getattr(error, 'message', error)}") from error
        if resource["kind"] != "Namespace":
            assert resource["metadata"].get("namespace") == "fraudwatch", where


def test_kubernetes_validation_rejects_a_broken_resource() -> None:
    pytest.importorskip("kubernetes_validate")
    broken = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"replicas": "two", "selector": {}, "template": {}},
    }
    with pytest.raises(Exception, match="two"):
        _validate_builtin(broken)


def _by_kind(resources: list[dict], kind: str, name: str) -> dict:
    return next(r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_workloads_are_locked_down(overlay: str, tmp_path: Path) -> None:
    resources = build_overlay(overlay, tmp_path)
    for resource in resources:
        if resource["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        pod = resource["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in pod["containers"]:
            where = f"{resource['metadata']['name']}/{container['name']}"
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], where
            assert container["resources"]["requests"], where
            assert container["resources"]["limits"], where
            assert not container["image"].endswith(":latest"), where
    api = _by_kind(resources, "Deployment", "scorer-api")["spec"]["template"]["spec"]["containers"][0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    token = next(e for e in api["env"] if e["name"] == "FRAUDWATCH_API_TOKEN")
    assert token["valueFrom"]["secretKeyRef"]["name"].startswith("fraudwatch-api-token")
    policies = [r for r in resources if r["kind"] == "NetworkPolicy"]
    assert any(
        p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        for p in policies
    )
    assert not any(r["kind"] == "Secret" for r in resources) or overlay == "dev", (
        "secrets only in the dev overlay"
    )


def test_overlays_differ_where_they_should(tmp_path: Path) -> None:
    dev = build_overlay("dev", tmp_path / "dev")
    prod = build_overlay("prod", tmp_path / "prod")
    hpa = {
        o: _by_kind(r, "HorizontalPodAutoscaler", "scorer-api")["spec"]
        for o, r in (("dev", dev), ("prod", prod))
    }
    assert hpa["dev"]["maxReplicas"] < hpa["prod"]["maxReplicas"]
    assert _by_kind(prod, "KafkaNodePool", "dual-role")["spec"]["replicas"] == 3
    config = {
        o: _by_kind(r, "ConfigMap", "fraudwatch-config")["data"] for o, r in (("dev", dev), ("prod", prod))
    }
    assert config["dev"]["FRAUDWATCH_ENVIRONMENT"] == "development"
    assert config["prod"]["FRAUDWATCH_ENVIRONMENT"] == "production"
    images = {
        c["image"]
        for c in _by_kind(dev, "Deployment", "scorer-api")["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"fraudwatch/scorer-api:dev"}
    assert _by_kind(dev, "SparkApplication", "fraudwatch-stream")["spec"]["image"] == "fraudwatch/stream:dev"


def test_k8s_config_variables_are_settings_fields() -> None:
    known = settings_env_names()
    for path in (ROOT / "k8s").rglob("*.yaml"):
        for name in re.findall(r"\b(FRAUDWATCH_[A-Z0-9_]+)\b", path.read_text()):
            assert name in known, f"{path.relative_to(ROOT)}: {name} is not a Settings field"
    config = yaml.safe_load((ROOT / "k8s" / "base" / "config.yaml").read_text())["data"]
    Settings(**{k.removeprefix("FRAUDWATCH_").lower(): v for k, v in config.items()}, api_token="x" * 16)


def test_generated_k8s_monitoring_is_up_to_date() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "k8s" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"run `python k8s/generate.py`:\n{proc.stderr}"


def test_generated_prometheus_rule_is_the_rules_file() -> None:
    rule = yaml.safe_load((ROOT / "k8s" / "base" / "monitoring" / "prometheus-rule.yaml").read_text())
    source = yaml.safe_load(
        (ROOT / "monitoring" / "prometheus" / "rules" / "fraudwatch.rules.yml").read_text()
    )
    assert rule["spec"]["groups"] == source["groups"]
    dashboards = list(
        yaml.safe_load_all((ROOT / "k8s" / "base" / "monitoring" / "grafana-dashboards.yaml").read_text())
    )
    uids = {json.loads(next(iter(cm["data"].values())))["uid"] for cm in dashboards}
    assert uids == {"fraudwatch-api", "fraudwatch-stream", "fraudwatch-model"}
