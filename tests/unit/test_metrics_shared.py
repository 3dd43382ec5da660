"""The metric families the API and the stream both export are one definition (fraudwatch.metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from fraudwatch.metrics import SharedMetrics
from fraudwatch_api.metrics import ApiMetrics
from fraudwatch_stream.metrics import StreamMetrics

SHARED = (
    "fraudwatch_store_duration_seconds",
    "fraudwatch_store_errors",
    "fraudwatch_model_info",
    "fraudwatch_feature_psi",
    "fraudwatch_score_psi",
)


def _families(registry: object) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    out = {}
    for metric in registry.collect():  # type: ignore[attr-defined]
        buckets = tuple(sorted({s.labels["le"] for s in metric.samples if "le" in s.labels}))
        out[metric.name] = (metric.type, metric.documentation, buckets)
    return out


def test_api_and_stream_declare_the_shared_families_identically() -> None:
    api, stream = ApiMetrics(), StreamMetrics()
    for m in (api, stream):  # one observation each, so histogram buckets are exported
        m.observe_store("sqlite", "probe", 0.001, failed=False)
    a, s = _families(api.registry), _families(stream.registry)
    for name in SHARED:
        assert name in a and name in s, name
        assert a[name] == s[name], name


def test_model_info_keeps_one_series_per_component() -> None:
    stream = StreamMetrics()
    stream.set_model("fraud-detector", "1", "production")
    stream.set_model("fraud-detector", "2", "production")
    text = generate_latest(stream.registry).decode()
    lines = [line for line in text.splitlines() if line.startswith("fraudwatch_model_info{")]
    assert len(lines) == 1 and 'version="2"' in lines[0] and 'component="stream"' in lines[0]


def test_psi_is_labelled_with_the_component() -> None:
    registry = CollectorRegistry()
    shared = SharedMetrics(registry, "api", store_ops=())
    shared.set_psi(0.3, {"amount": 0.1})
    shared.set_psi(None, {"hour": 0.2})
    text = generate_latest(registry).decode()
    assert 'fraudwatch_score_psi{component="api"} 0.3' in text
    assert 'fraudwatch_feature_psi{component="api",feature="hour"} 0.2' in text
