"""The option checks: each gives the typed value or a ValueError that names the option."""

from __future__ import annotations

import pytest

from jitgate import option_checks as checks


def test_seconds_reads_units_and_names_the_option() -> None:
    assert checks.seconds()("2m", "x_refresh") == 120.0
    assert checks.seconds(zero_ok=True)("0", "x") == 0.0
    with pytest.raises(ValueError, match=r"^x_refresh: .*positive"):
        checks.seconds()("0", "x_refresh")
    with pytest.raises(ValueError, match=r"^t: "):
        checks.seconds(units=("ms", "s"))("2m", "t")
    with pytest.raises(ValueError, match="at most 3600"):
        checks.seconds(at_most=3600.0)("3601", "t")


@pytest.mark.parametrize(
    ("check", "good", "bad", "message"),
    [
        (checks.between(1, 1000), 1000, 1001, r"^n must be between 1 and 1000$"),
        (checks.between(1, 1000), 1, 0, r"^n must be between 1 and 1000$"),
        (checks.at_least(1024), 1024, 1023, r"^n must be at least 1024$"),
        (checks.at_least(1, " second"), 1, 0, r"^n must be at least 1 second$"),
        (checks.positive, 1, 0, r"^n must be positive$"),
        (checks.one_of("auto", "hyperscan", "re"), "re", "pcre", r"^n must be auto, hyperscan or re$"),
        (checks.arn("SNS topic"), "arn:aws:sns:us-east-1:1:t", "topic", r"^n must be an SNS topic ARN$"),
        (checks.plain_name, "gw-1.a_b", "gw/../x", r"^n may hold letters"),
        (checks.http_url("the broker's"), "https://b/x", "ftp://b/x", r"^n must be the broker's http"),
    ],
)
def test_a_check_keeps_good_values_and_refuses_bad_ones(check: checks.Check, good: object, bad: object,
                                                        message: str) -> None:
    assert check(good, "n") == good
    with pytest.raises(ValueError, match=message):
        check(bad, "n")


def test_empty_is_allowed_where_the_option_is_optional() -> None:
    assert checks.arn("SNS topic")("", "n") == ""
    assert checks.plain_name("", "n") == ""


def test_upper_list_strips_and_drops_empty_items() -> None:
    assert checks.upper_list(" us, gb ,,jp", "n") == ("US", "GB", "JP")
    assert checks.upper_list("", "n") == ()


def test_required_names_why() -> None:
    assert checks.required("t", "jitgate_table", "holds live in it") == "t"
    with pytest.raises(ValueError, match=r"^jitgate_table is required: holds live in it$"):
        checks.required("", "jitgate_table", "holds live in it")
