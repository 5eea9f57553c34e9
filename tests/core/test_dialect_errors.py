"""`error_body`: jitgate's code and message, plus the field each dialect's SDK reads (issue 25, item 6)."""

from __future__ import annotations

import pytest

from jitgate.dialects import DIALECTS, error_body


@pytest.mark.parametrize("dialect", [*DIALECTS, None, "unknown"])
def test_every_shape_keeps_jitgates_code_and_message(dialect: str | None) -> None:
    body = error_body(dialect, "not_granted", "no grant gives you connection 'x'")
    assert (body["code"], body["message"]) == ("not_granted", "no grant gives you connection 'x'")


@pytest.mark.parametrize(
    ("dialect", "extra"),
    [
        ("voyage", {"detail": "m"}),
        ("jina", {"detail": "m"}),
        ("tei", {"error": "m", "error_type": "token_required"}),
        ("cohere", {}),
        ("chroma", {}),
        ("generic", {}),
        (None, {}),
    ],
)
def test_the_vendor_fields(dialect: str | None, extra: dict[str, str]) -> None:
    assert error_body(dialect, "token_required", "m") == {"code": "token_required", "message": "m", **extra}
