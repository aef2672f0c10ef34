"""Just enough PromQL for the tests of the dashboards and alert rules: the queries a file holds,
the metric selectors in a query, and whether scraped samples would give a selector data."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted(
    [*ROOT.glob("deploy/grafana/*.json"), *ROOT.glob("helm/driftline/files/*dashboard*.json")]
)
RULE_FILES = sorted(
    [*ROOT.glob("deploy/prometheus/rules/*.yml"), *ROOT.glob("helm/driftline/files/*alerts*.yml")]
)
NAME = re.compile(r"\b((?:driftline|faust)_[a-z0-9_]+)\b")
_SELECTOR = re.compile(r"\b((?:driftline|faust)_[a-z0-9_]+)\b(?:\{([^}]*)\})?")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')

Sample = tuple[str, dict[str, str]]
"""A scraped sample's series name (``x_total``, ``x_bucket``...) and labels."""


def _strings(node: Any, keys: set[str]) -> Iterator[str]:
    """Every string under one of `keys`, anywhere in a parsed JSON or YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in keys and isinstance(value, str):
                yield value
            else:
                yield from _strings(value, keys)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item, keys)


def queries(path: Path) -> list[str]:
    """The PromQL of a dashboard (panel targets, variable queries) or of a rules file."""
    if path.suffix == ".json":
        return list(_strings(json.loads(path.read_text()), {"expr", "query", "definition"}))
    return list(_strings(yaml.safe_load(path.read_text()), {"expr"}))


@dataclass(frozen=True)
class Selector:
    """A metric name with the label matchers of its braces that name no dashboard variable
    (``service=~"$service"`` matches whatever the variable is set to)."""

    name: str
    matchers: tuple[tuple[str, str, str], ...]

    def matches(self, sample: Sample) -> bool:
        name, labels = sample
        return name == self.name and all(
            _matches(labels.get(label, ""), op, value) for label, op, value in self.matchers
        )

    def __str__(self) -> str:
        inside = ", ".join(f'{label}{op}"{value}"' for label, op, value in self.matchers)
        return f"{self.name}{{{inside}}}" if inside else self.name


def _matches(actual: str, op: str, value: str) -> bool:
    if op == "=":
        return actual == value
    if op == "!=":
        return actual != value
    found = re.fullmatch(value, actual) is not None
    return found if op == "=~" else not found


def selectors(expression: str) -> list[Selector]:
    """The Driftline and Faust metric selectors of one PromQL expression."""
    return [
        Selector(
            name,
            tuple(m for m in _MATCHER.findall(braces or "") if "$" not in m[2]),
        )
        for name, braces in _SELECTOR.findall(expression)
    ]


def samples(expositions: Iterable[str]) -> list[Sample]:
    """Every sample of Prometheus exposition texts (each worker's ``/metrics``)."""
    return [
        (sample.name, sample.labels)
        for text in expositions
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]
