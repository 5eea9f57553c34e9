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
