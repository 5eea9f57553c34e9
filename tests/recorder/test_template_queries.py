"""template.yaml against the recorder's code: Athena named queries equal `jitgate.audit`'s, and the
Glue tables `sessions` / `token_events` declare exactly the writers' columns, in types the local
DuckDB reader understands too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from jitgate.audit import NAMED_QUERIES
from jitgate.events import glue_columns
from jitgate.records import COLUMNS, PARTITIONS, duckdb_type

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !Sub, …) kept as {tag: value}."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node)
    else:
        value = loader.construct_mapping(node)  # type: ignore[arg-type]
    return {suffix: value}


_CfnLoader.add_multi_constructor("!", _tag)


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)
    return loaded["Resources"]


def _of_type(resources: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [r["Properties"] for r in resources.values() if r["Type"] == kind]


def _table(resources: dict[str, Any], name: str) -> dict[str, Any]:
    (table,) = [p["TableInput"] for p in _of_type(resources, "AWS::Glue::Table") if p["TableInput"]["Name"] == name]
    return table


def _columns(entries: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(c["Name"], c["Type"]) for c in entries]


@pytest.mark.parametrize("name", sorted(NAMED_QUERIES))
def test_named_query_ships_with_the_athena_text(resources: dict[str, Any], name: str) -> None:
    by_name = {p["Name"]: p for p in _of_type(resources, "AWS::Athena::NamedQuery")}
    query = by_name[f"jitgate-{name}"]
    assert query["QueryString"] == NAMED_QUERIES[name].athena_sql()
    assert query["Database"] == {"Ref": "GlueDatabase"} and query["WorkGroup"] == {"Ref": "AthenaWorkGroup"}


def test_sessions_table_is_the_record_schema(resources: dict[str, Any]) -> None:
    table = _table(resources, "sessions")
    assert _columns(table["StorageDescriptor"]["Columns"]) == list(COLUMNS)
    assert _columns(table["PartitionKeys"]) == list(PARTITIONS)
    params = table["Parameters"]
    # the uploader's keys: sessions/dt=YYYY-MM-DD/hour=HH/
    assert params["projection.hour.digits"] == "2" and params["projection.dt.format"] == "yyyy-MM-dd"
    assert "/sessions/dt=${!dt}/hour=${!hour}/" in params["storage.location.template"]["Sub"]


def test_token_events_table_is_the_event_schema(resources: dict[str, Any]) -> None:
    table = _table(resources, "token_events")
    assert _columns(table["StorageDescriptor"]["Columns"]) == glue_columns()
    assert _columns(table["PartitionKeys"]) == [("dt", "string")]


@pytest.mark.parametrize("name", ["sessions", "token_events"])
def test_every_glue_type_reads_in_duckdb(resources: dict[str, Any], name: str) -> None:
    for _, glue in _columns(_table(resources, name)["StorageDescriptor"]["Columns"]):
        assert duckdb_type(glue)
