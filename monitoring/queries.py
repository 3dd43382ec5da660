"""Every PromQL query that monitoring/ holds: Grafana panel queries, rule expressions, and the metric names
they reference. Used by the unit tests (metric-name contract) and meant for an integration test that runs
each dashboard query against a real Prometheus and checks it returns data.

Run ``python monitoring/queries.py`` to print every query as JSON lines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

MONITORING_DIR = Path(__file__).resolve().parent
DASHBOARDS_DIR = MONITORING_DIR / "grafana" / "dashboards"
RULES_DIR = MONITORING_DIR / "prometheus" / "rules"

# Grafana's built-in interval variables, replaced by what Prometheus accepts when a query runs outside Grafana.
GRAFANA_INTERVALS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}

_PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
    | {"inf", "nan", "atan2", "start", "end"}
)


@dataclass(frozen=True)
class Query:
    """One PromQL expression and where it lives."""

    source: str  # file name relative to monitoring/
    where: str  # dashboard panel title / template variable, or rule name
    expr: str
    instant: bool = False

    def for_prometheus(self) -> str:
        """The expression with Grafana's interval variables replaced, ready for Prometheus's HTTP API."""
        expr = self.expr
        for variable, value in GRAFANA_INTERVALS.items():
            expr = expr.replace(variable, value)
        return expr


def _panels(panels: list[dict]) -> Iterator[dict]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_panels(path: Path) -> Iterator[dict]:
    """Every panel of a dashboard that shows data (rows descended into, not returned)."""
    dashboard = json.loads(path.read_text())
    for panel in _panels(dashboard.get("panels", [])):
        if panel.get("type") != "row":
            yield panel


def dashboard_queries(path: Path) -> list[Query]:
    """Panel target expressions and template-variable queries of one dashboard JSON file."""
    source = str(path.relative_to(MONITORING_DIR)) if path.is_relative_to(MONITORING_DIR) else str(path)
    queries = [
        Query(
            source,
            panel.get("title", f"panel {panel.get('id')}"),
            target["expr"],
            bool(target.get("instant")),
        )
        for panel in dashboard_panels(path)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    dashboard = json.loads(path.read_text())
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable.get("type") == "query" and query:
            queries.append(Query(source, f"variable {variable.get('name')}", query, instant=True))
    return queries


def rules(path: Path) -> Iterator[dict]:
    for group in yaml.safe_load(path.read_text())["groups"]:
        yield from group["rules"]


def rule_queries(path: Path) -> list[Query]:
    source = str(path.relative_to(MONITORING_DIR)) if path.is_relative_to(MONITORING_DIR) else str(path)
    return [
        Query(source, rule.get("alert") or rule["record"], rule["expr"], instant=True) for rule in rules(path)
    ]


def all_dashboard_queries() -> list[Query]:
    return [q for path in sorted(DASHBOARDS_DIR.glob("*.json")) for q in dashboard_queries(path)]


def all_rule_queries() -> list[Query]:
    return [q for path in sorted(RULES_DIR.glob("*.yml")) for q in rule_queries(path)]


def recorded_names() -> set[str]:
    return {
        rule["record"] for path in sorted(RULES_DIR.glob("*.yml")) for rule in rules(path) if "record" in rule
    }


def metric_names(expr: str) -> set[str]:
    """Series names a PromQL expression selects (functions, keywords, label names and literals removed).

    Also understands Grafana's ``label_values(metric, label)`` variable queries.
    """
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    # Label lists of grouping and vector-matching clauses.
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    label_values = re.match(r"\s*label_values\s*\(\s*([^,)]*?)\s*(?:,[^)]*)?\)\s*$", text)
    if label_values:
        text = label_values.group(1)
    text = re.sub(r"\$\w+|\$\{[^}]*\}", " ", text)  # Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        name, is_call = match.group(1), match.group(2)
        if is_call or name.lower() in _PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


def main() -> None:
    for query in all_dashboard_queries() + all_rule_queries():
        print(json.dumps({"source": query.source, "where": query.where, "expr": query.for_prometheus()}))


if __name__ == "__main__":
    main()
