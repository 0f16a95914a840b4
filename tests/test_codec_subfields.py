"""DE54, DE90 and DE95 subfields: round trips, rejections, the original key."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso_switch.codec import (
    Balance,
    OriginalData,
    ReplacementAmounts,
    SubfieldError,
    build_de54,
    build_de90,
    build_de95,
    parse_de54,
    parse_de90,
    parse_de95,
)
from iso_switch.codec.subfields import (
    MAX_AMOUNT_MINOR,
    MAX_BALANCES,
    de95_actual_amount,
    normalize_institution_id,
)


def digits(n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789", min_size=n, max_size=n)


balances = st.builds(
    Balance,
    account_type=digits(2),
    amount_type=st.one_of(st.sampled_from(["01", "02"]), digits(2)),
    currency=digits(3),
    amount_minor=st.integers(-MAX_AMOUNT_MINOR, MAX_AMOUNT_MINOR),
)
originals = st.builds(
    OriginalData, mti=digits(4), stan=digits(6), transmitted=digits(10),
    acquirer_id=digits(11), forwarding_id=digits(11),
)


@given(st.lists(balances, max_size=MAX_BALANCES))
def test_de54_round_trip(items: list[Balance]) -> None:
    text = build_de54(items)
    assert len(text) == 20 * len(items)
    assert parse_de54(text) == items
    assert build_de54(parse_de54(text)) == text


@given(st.text(alphabet="0123456789CD", max_size=60))
def test_de54_parse_accepts_or_raises_cleanly(text: str) -> None:
    try:
        parsed = parse_de54(text)
    except SubfieldError as exc:
        assert exc.field == "54"
        assert 0 <= exc.position <= len(text) or exc.position == 20 * MAX_BALANCES
    else:
        # A debit zero is the only value written differently on the way out.
        assert build_de54(parsed) == text.replace("D000000000000", "C000000000000")


def test_de54_known_value() -> None:
    text = "0001156C000001000000" "0002156D000000000500"
    ledger, available = parse_de54(text)
    assert ledger == Balance("00", "01", "156", 1_000_000)
    assert ledger.amount_type_name == "ledger"
    assert available.amount_minor == -500
    assert available.amount_type_name == "available"


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("0001156C00000100000", 19),  # not a multiple of 20
        ("0001156X000001000000", 7),  # sign
        ("0001156C00000100000A", 8),  # amount
        ("0A01156C000001000000", 0),  # account type
        ("00011A6C000001000000", 4),  # currency
        ("0001156C000001000000" "00021X6C000000000500", 24),  # position in the 2nd balance
        ("0001156C000001000000" * (MAX_BALANCES + 1), 20 * MAX_BALANCES),
    ],
)
def test_de54_rejects_malformed(text: str, position: int) -> None:
    with pytest.raises(SubfieldError) as caught:
        parse_de54(text)
    assert caught.value.field == "54"
    assert caught.value.position == position


def test_balance_rejects_bad_values() -> None:
    with pytest.raises(SubfieldError):
        Balance("00", "01", "156", MAX_AMOUNT_MINOR + 1)
    with pytest.raises(SubfieldError):
        Balance("00", "01", "156", True)
    with pytest.raises(SubfieldError):
        Balance("0", "01", "156", 1)
    with pytest.raises(SubfieldError):
        build_de54([Balance("00", "01", "156", 1)] * (MAX_BALANCES + 1))


@given(originals)
def test_de90_round_trip(original: OriginalData) -> None:
    text = build_de90(original)
    assert len(text) == 42
    assert parse_de90(text) == original
    assert build_de90(parse_de90(text)) == text


def test_de90_layout_and_from_parts() -> None:
    original = OriginalData.from_parts("0200", "000123", "0615103000", "123456")
    assert build_de90(original) == "0200" "000123" "0615103000" "00000123456" "00000000000"
    assert parse_de90(build_de90(original)).acquirer_id == "00000123456"


def test_original_key_absent_and_all_zero_acquirer_are_the_same() -> None:
    absent = OriginalData.from_parts("0200", "000123", "0615103000")
    zeros = OriginalData.from_parts("0200", "000123", "0615103000", "00000")
    given_id = OriginalData.from_parts("0201", "000123", "0615103000", "0012345")
    assert absent.original_key("TERM0001") == zeros.original_key("TERM0001")
    assert absent.original_key("TERM0001") == ("020", "TERM0001", "000123", "0615103000", "")
    assert given_id.original_key("TERM0001")[4] == "12345"
    assert normalize_institution_id(None) == normalize_institution_id("000") == ""


def test_original_key_matches_the_processor_key() -> None:
    """The processor's key for the original request is what DE90 finds."""
    from iso_switch.processor.fields import make_key

    original = OriginalData.from_parts("0100", "000007", "0615103000", "0042")
    assert "|".join(original.original_key("TERM0001")) == make_key(
        "010", "TERM0001", "000007", "0615103000", normalize_institution_id("0042")
    )


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("0" * 41, 41),
        ("0" * 43, 42),
        ("02X0" + "0" * 38, 0),
        ("0200" + "00012X" + "0" * 32, 4),
        ("0200" + "000123" + "06151030X0" + "0" * 22, 10),
        ("0200" + "000123" + "0615103000" + "0000000000A" + "0" * 11, 20),
        ("0200" + "000123" + "0615103000" + "0" * 11 + " " * 11, 31),
    ],
)
def test_de90_rejects_malformed(text: str, position: int) -> None:
    with pytest.raises(SubfieldError) as caught:
        parse_de90(text)
    assert (caught.value.field, caught.value.position) == ("90", position)


def test_de90_from_parts_rejects_long_or_non_numeric_ids() -> None:
    with pytest.raises(SubfieldError):
        OriginalData.from_parts("0200", "000123", "0615103000", "123456789012")
    with pytest.raises(SubfieldError):
        OriginalData.from_parts("0200", "000123", "0615103000", None, "12A")


@given(st.integers(0, MAX_AMOUNT_MINOR),
       st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E),
               min_size=30, max_size=30))
def test_de95_round_trip(actual: int, rest: str) -> None:
    amounts = ReplacementAmounts(actual, rest)
    text = build_de95(amounts)
    assert len(text) == 42
    assert parse_de95(text) == amounts
    assert build_de95(parse_de95(text)) == text


def test_de95_actual_amount_is_the_first_12_digits() -> None:
    assert parse_de95("000000000500" + "0" * 30).actual_amount_minor == 500
    assert build_de95(ReplacementAmounts(500)) == "000000000500" + "0" * 30
    with pytest.raises(SubfieldError):
        parse_de95("00000000050X" + "0" * 30)
    with pytest.raises(SubfieldError):
        parse_de95("000000000500")
    with pytest.raises(SubfieldError):
        ReplacementAmounts(-1)


def test_errors_never_carry_the_value() -> None:
    secret = "4761739001010010"
    for parse, text in (
        (parse_de54, secret + "ABCD"),
        (parse_de90, secret + "X" * 26),
        (parse_de95, "A" + secret + "Y" * 25),
    ):
        with pytest.raises(SubfieldError) as caught:
            parse(text)  # type: ignore[operator]
        assert secret not in str(caught.value)
        again = pickle.loads(pickle.dumps(caught.value))
        assert (again.field, again.position) == (caught.value.field, caught.value.position)


def test_de95_actual_amount_reads_only_the_first_12_digits() -> None:
    assert de95_actual_amount("000000000500" + "0" * 30) == 500
    assert de95_actual_amount("000000000500") == 500
    assert de95_actual_amount("000000000500" + "rest as sent") == 500
    for text in ("00000000050X" + "0" * 30, "00000000050", "", "٠" * 12):
        with pytest.raises(SubfieldError) as caught:
            de95_actual_amount(text)
        assert (caught.value.field, caught.value.position) == ("95", 0)
