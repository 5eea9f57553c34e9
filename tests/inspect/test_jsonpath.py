"""Offsets in a JSON body map to the path of the string (or key) holding them."""

from __future__ import annotations

import json

import pytest

from jitgate.inspect.jsonpath import locate


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"query": "find MARK"}, "$.query"),
        ({"documents": ["a", "b MARK"]}, "$.documents[1]"),
        ({"documents": [{"id": "1", "text": "x"}, {"id": "2", "text": "MARK"}]}, "$.documents[1].text"),
        ({"results": [{"index": 0, "document": {"text": "MARK"}}]}, "$.results[0].document.text"),
        ({"odd key": [[1, 2], ["MARK"]]}, '$["odd key"][1][0]'),
        ({"MARK": 1}, "$.MARK (key)"),
        ({"a": "esc \\" + '" MARK'}, "$.a"),
    ],
)
def test_locate(doc: object, path: str) -> None:
    raw = json.dumps(doc).encode()
    offset = raw.index(b"MARK")
    assert locate(raw, [offset]) == {offset: path}


def test_many_offsets_in_one_pass() -> None:
    docs = [f"doc {i} MARK" for i in range(50)]
    raw = json.dumps({"documents": docs}).encode()
    offsets = [i for i in range(len(raw)) if raw.startswith(b"MARK", i)]
    assert list(locate(raw, offsets).values()) == [f"$.documents[{i}]" for i in range(50)]


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"meta": {"MARK": 1}}, "$.meta.* (key)"),  # the finding is the key
        ({"MARK": {"x": "MARK"}}, "$.*.x"),  # an ancestor's key holds another finding
        ({"a": {"b": "MARK"}, "MARK": 2}, "$.a.b"),  # a finding elsewhere hides only its own key
    ],
)
def test_a_key_holding_a_finding_is_never_written(doc: object, path: str) -> None:
    """A key is text the client wrote: one that overlaps a finding's span shows as `*` (issue 16)."""
    raw = json.dumps(doc).encode()
    spans = [(i, i + 4) for i in range(len(raw)) if raw.startswith(b"MARK", i)]
    last = spans[-1][0] if path != "$.a.b" else spans[0][0]
    found = locate(raw, [last], hidden=spans)
    assert found == {last: path}
    assert "MARK" not in found[last]
