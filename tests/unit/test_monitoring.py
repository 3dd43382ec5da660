"""monitoring/ is valid and keeps the contracts: promtool accepts the config and the rules and their unit
tests pass; dashboards parse and every panel queries something; every metric named in dashboards and rules
is in docs/metrics.md; every alert links to an existing runbook section."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
PROMETHEUS_DIR = MONITORING / "prometheus"
DASHBOARDS = sorted((MONITORING / "grafana" / "dashboards").glob("*.json"))
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
DATASOURCE_UID = "prometheus"
# Metrics every Prometheus has that fraudwatch rules may use besides the contract.
PROMETHEUS_BUILTIN = {"up"}


queries = load_script("monitoring/queries.py", "fraudwatch_monitoring_queries")


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`; .ci/run installs it)")
    return promtool


def _run(*args: str) -> None:
    proc = subprocess.run(args, cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"


def contract_metrics() -> dict[str, str]:
    """metric name -> type, parsed from the table in docs/metrics.md."""
    table = {}
    for line in (ROOT / "docs" / "metrics.md").read_text().splitlines():
        match = re.match(r"^\|\s*`([a-z_:][a-z0-9_:]*)`\s*\|\s*([a-z]+)", line)
        if match:
            table[match.group(1)] = match.group(2)
    assert len(table) > 10, "could not parse the metrics table in docs/metrics.md"
    return table


def series_names_in_contract() -> set[str]:
    """Every series name a contract metric exposes (histograms: _bucket, _sum, _count)."""
    names = set()
    for name, kind in contract_metrics().items():
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def github_anchor(heading: str) -> str:
    anchor = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return anchor.replace(" ", "-")


def alerts() -> list[dict]:
    return [rule for path in RULE_FILES for rule in queries.rules(path) if "alert" in rule]


# --- promtool ---------------------------------------------------------------------------------------------


def test_promtool_check_config() -> None:
    _run(_promtool(), "check", "config", "prometheus.yml")


def test_promtool_check_config_with_compose_targets(tmp_path: Path) -> None:
    """The compose variant (targets-compose/ mounted over targets/) is a valid config as well."""
    promtool = _promtool()
    shutil.copy(PROMETHEUS_DIR / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copytree(PROMETHEUS_DIR / "rules", tmp_path / "rules")
    shutil.copytree(PROMETHEUS_DIR / "targets-compose", tmp_path / "targets")
    proc = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_check_rules() -> None:
    assert RULE_FILES
    _run(_promtool(), "check", "rules", *(str(p.relative_to(PROMETHEUS_DIR)) for p in RULE_FILES))


def test_promtool_rule_unit_tests() -> None:
    assert RULE_TESTS
    _run(_promtool(), "test", "rules", *(str(p.relative_to(PROMETHEUS_DIR)) for p in RULE_TESTS))


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - fired == set(), "alerts without a test that fires them"
    assert names - quiet == set(), "alerts without a test where they stay quiet"


def test_local_and_compose_targets_cover_the_same_jobs() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    files = {f for job in config["scrape_configs"] for sd in job["file_sd_configs"] for f in sd["files"]}
    for name in files:
        assert (PROMETHEUS_DIR / name).is_file(), name
        assert (PROMETHEUS_DIR / name.replace("targets/", "targets-compose/", 1)).is_file(), name
    compose_targets = {
        t
        for f in (PROMETHEUS_DIR / "targets-compose").glob("*.yml")
        for g in yaml.safe_load(f.read_text())
        for t in g["targets"]
    }
    assert compose_targets >= {"scorer-api:8000", "stream:9108", "producer:9109"}


# --- rules ------------------------------------------------------------------------------------------------


def test_alerts_have_severity_annotations_and_runbook_anchor() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {github_anchor(m) for m in re.findall(r"^#{2,3}\s+(.+)$", runbook, flags=re.M)}
    assert alerts()
    for rule in alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"].get("summary"), name
        assert rule["annotations"].get("description"), name
        url = rule["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page == "docs/runbook.md", f"{name}: runbook_url {url!r} must point into docs/runbook.md"
        assert anchor in anchors, f"{name}: docs/runbook.md has no section for #{anchor}"


def test_rule_metric_names_are_in_the_contract() -> None:
    allowed = series_names_in_contract() | queries.recorded_names() | PROMETHEUS_BUILTIN
    for query in queries.all_rule_queries():
        unknown = queries.metric_names(query.expr) - allowed
        assert not unknown, f"{query.source} {query.where}: {sorted(unknown)} not in docs/metrics.md"


def test_recording_rule_names_follow_the_convention() -> None:
    for name in queries.recorded_names():
        assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", name), name


def test_metric_name_extraction() -> None:
    """The checker itself: it must see through functions, label lists, matchers and Grafana variables."""
    expr = (
        "histogram_quantile(0.99, sum by (le, route) (rate(fraudwatch_api_request_duration_seconds_bucket"
        '{route="/score", status=~"5.."}[$__rate_interval]))) > on (route) group_left(x) foo:bar:rate5m'
    )
    assert queries.metric_names(expr) == {"fraudwatch_api_request_duration_seconds_bucket", "foo:bar:rate5m"}
    assert queries.metric_names("time() - max(fraudwatch_typo_seconds)") == {"fraudwatch_typo_seconds"}
    assert queries.metric_names("label_values(fraudwatch_model_info, version)") == {"fraudwatch_model_info"}


# --- Grafana ----------------------------------------------------------------------------------------------


def test_dashboards_exist_with_fixed_uids() -> None:
    uids = {json.loads(p.read_text())["uid"] for p in DASHBOARDS}
    assert uids == {"fraudwatch-api", "fraudwatch-stream", "fraudwatch-model"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_panels_query_the_fixed_datasource(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["title"].startswith("fraudwatch / ")
    assert dashboard["schemaVersion"] >= 36
    panels = list(queries.dashboard_panels(path))
    assert panels
    ids = [p["id"] for p in queries._panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        targets = [t for t in panel.get("targets", []) if t.get("expr", "").strip()]
        assert targets, f"panel {panel.get('title')!r} has no query"
        for target in [panel, *targets]:
            assert target["datasource"]["uid"] == DATASOURCE_UID, panel.get("title")


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_metric_names_are_in_the_contract(path: Path) -> None:
    allowed = series_names_in_contract() | queries.recorded_names() | PROMETHEUS_BUILTIN
    for query in queries.dashboard_queries(path):
        unknown = queries.metric_names(query.expr) - allowed
        assert not unknown, f"{path.name} panel {query.where!r}: {sorted(unknown)} not in docs/metrics.md"


def test_contract_metrics_are_all_shown_somewhere() -> None:
    """Each metric in the contract appears on a dashboard or in a rule (a metric nobody looks at is dead)."""
    used = set()
    for query in queries.all_dashboard_queries() + queries.all_rule_queries():
        used |= queries.metric_names(query.expr)
    for name, kind in contract_metrics().items():
        variants = {name, f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}
        assert variants & used, f"{name} is in docs/metrics.md but on no dashboard and in no rule"


def test_grafana_provisioning() -> None:
    provisioning = MONITORING / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert [d["uid"] for d in datasources] == [DATASOURCE_UID]
    providers = yaml.safe_load((provisioning / "dashboards" / "fraudwatch.yml").read_text())["providers"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards/fraudwatch"


# ------------------------------------------------------------------------------- stuck-query signals
def test_stuck_query_signals_lag_keeps_growing_between_batches(tmp_path: Path) -> None:
    """What FraudwatchStreamQueryStuck watches: the lag is refreshed from the brokers against the offsets the
    last completed batch reached (from the checkpoint at start-up), and progress means a batch read rows."""
    from types import SimpleNamespace

    from fraudwatch_stream.metrics import StreamMetrics, checkpoint_offsets

    checkpoint = tmp_path / "scorer"
    assert checkpoint_offsets(checkpoint) == {}  # a fresh job
    (checkpoint / "offsets").mkdir(parents=True)
    (checkpoint / "commits").mkdir()
    for batch, offset in ((0, 10), (1, 25), (2, 40)):
        (checkpoint / "offsets" / str(batch)).write_text(
            'v1\n{"batchWatermarkMs":0}\n' + json.dumps({"tx": {"0": offset, "1": offset + 1}}) + "\n"
        )
    for batch in (0, 1):  # batch 2 was planned but never committed
        (checkpoint / "commits" / str(batch)).write_text("v1\n{}\n")
    assert checkpoint_offsets(checkpoint) == {"tx": {"0": 25, "1": 26}}

    m = StreamMetrics()
    started = m.last_progress._value.get()
    m.set_end_offsets(checkpoint_offsets(checkpoint))
    assert m.refresh_lag({"tx": {"0": 30, "1": 30}, "other": {"0": 99}}) == {"tx": 9}
    assert m.refresh_lag({"tx": {"0": 130, "1": 30}}) == {"tx": 109}  # stuck: the lag keeps growing
    assert m.kafka_lag.labels(topic="tx")._value.get() == 109

    def progress(rows: int) -> SimpleNamespace:
        source = SimpleNamespace(
            endOffset='{"tx": {"0": 130, "1": 30}}', latestOffset='{"tx": {"0": 130, "1": 30}}'
        )
        return SimpleNamespace(
            inputRowsPerSecond=1.0, processedRowsPerSecond=1.0, durationMs={}, batchDuration=5,
            sources=[source], batchId=3, numInputRows=rows, stateOperators=[],
        )  # fmt: skip

    assert started > 0  # the job's start counts as progress until the first batch
    m.last_progress.set(0)
    m.on_progress(progress(0), ())
    assert m.last_progress._value.get() == 0  # an empty batch is no progress
    m.on_progress(progress(5), ())
    assert m.last_progress._value.get() > 0
    assert m.refresh_lag({"tx": {"0": 131, "1": 30}}) == {"tx": 1}


def test_lag_poller_reads_the_brokers_high_watermarks() -> None:
    """LagPoller.latest against a stand-in for confluent_kafka's Consumer (the broker calls it makes)."""
    from types import SimpleNamespace

    from fraudwatch_stream.metrics import LagPoller, StreamMetrics

    class _Consumer:
        def list_topics(self, topic: str, timeout: float) -> SimpleNamespace:
            known = {"tx": SimpleNamespace(error=None, partitions={0: None, 1: None})}
            return SimpleNamespace(topics={t: v for t, v in known.items() if t == topic})

        def get_watermark_offsets(self, tp: object, timeout: float) -> tuple[int, int]:
            return 0, 100 + 10 * tp.partition  # type: ignore[attr-defined]

    m = StreamMetrics()
    poller = LagPoller(m, "localhost:1", ("tx", "missing"), every=0.01)
    assert poller.latest(_Consumer()) == {"tx": {"0": 100, "1": 110}}
    m.set_end_offsets({"tx": {"0": 40, "1": 110}})
    assert m.refresh_lag(poller.latest(_Consumer())) == {"tx": 60}
