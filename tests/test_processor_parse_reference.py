"""parse_request (rewritten for speed) against the plain version it
replaced, copied here verbatim from commit 1137b80 as the reference: the
same requests pass with the same Parsed value, the same ones fail (30).
Hypothesis builds well-formed requests and breaks them field by field."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from hypothesis import given
from hypothesis import strategies as st

from iso_switch.acquirer.mac import MAC_FIELDS
from iso_switch.processor.fields import (
    ACCOUNT_CHARS_MAX,
    AMOUNT_DIGITS_MAX,
    DE32_DIGITS_MAX,
    DE90_DIGITS,
    KSN_HEX_CHARS,
    LISTED_OPTIONAL,
    MANDATORY,
    ORIGINAL_CLASSES,
    PAN_DIGITS_MAX,
    PIN_BLOCK_HEX_CHARS,
    FormatError,
    Original,
    Parsed,
    _check_de7,
    _digits,
    _hex,
    _track2,
    make_key,
    parse_request,
)
from iso_switch.processor.fields import CLASS_OF_MTI as _CLASS_OF_MTI

KEY = b"k" * 32


# -- the reference: parse_request as of commit 1137b80 ------------------------
def reference_parse_request(fields: Mapping[str, str], content_key: bytes) -> Parsed:
    """Check a 01xx/02xx/04xx request and compute its key and content.

    Raises :class:`FormatError` (answer 30) for anything malformed."""
    mti = fields.get("t", "")
    cls = _CLASS_OF_MTI.get(mti)
    if cls is None:
        raise FormatError("MTI not accepted")
    listed = MANDATORY[cls] + LISTED_OPTIONAL[cls]
    f = {k: fields[k] for k in listed if k in fields}
    for name in MANDATORY[cls]:
        if not f.get(name, "").strip():
            raise FormatError(f"DE{name} is missing")
    pan = expiry = ""
    if "2" in f:
        pan = _digits(f["2"], "2", most=PAN_DIGITS_MAX)
    if "35" in f:
        track_pan, expiry = _track2(f["35"])
        if pan and track_pan != pan:
            raise FormatError("DE2 and DE35 name different cards")
        pan = track_pan
    if cls in ORIGINAL_CLASSES and not pan:
        raise FormatError("DE2 or DE35 is missing")
    if "14" in f:
        expiry = _digits(f["14"], "14", exact=4)
    code = _digits(f["3"], "3", exact=6) if "3" in f else ""
    amount = int(_digits(f["4"], "4", most=AMOUNT_DIGITS_MAX)) if "4" in f else None
    currency = int(_digits(f["49"], "49", exact=3)) if "49" in f else None
    transmitted = _check_de7(f["7"])
    stan = _digits(f["11"], "11", exact=6)
    for name, length in (("12", 6), ("13", 4), ("22", 3)):
        if name in f:
            _digits(f[name], name, exact=length)
    acquirer = _digits(f["32"], "32", most=DE32_DIGITS_MAX).lstrip("0") if "32" in f else ""
    original = None
    if "90" in f:
        de90 = _digits(f["90"], "90", exact=DE90_DIGITS)
        original = Original(de90[0:4], de90[4:10], de90[10:20], de90[20:31].lstrip("0"))
    actual = None
    if "95" in f:
        actual = int(_digits(f["95"][:AMOUNT_DIGITS_MAX], "95", exact=AMOUNT_DIGITS_MAX))
    pin_block = bytes.fromhex(_hex(f["52"], "52", PIN_BLOCK_HEX_CHARS)) if "52" in f else None
    ksn = _hex(f["62"], "62", KSN_HEX_CHARS) if "62" in f else None
    carries_mac = any(name in fields for name in MAC_FIELDS)
    if (pin_block is not None or carries_mac) and ksn is None:
        raise FormatError("DE62 (KSN) is missing")
    source = f.get("102", "").strip()
    dest = f.get("103", "").strip()
    if len(source) > ACCOUNT_CHARS_MAX or len(dest) > ACCOUNT_CHARS_MAX:
        raise FormatError("DE102/DE103 too long")
    # DE103 is mandatory for 40 in the 0100/0200 row (section 3): a format
    # error (30) comes before "40 is not allowed on 0100" (12).
    if cls in ("010", "020") and code[:2] == "40" and not dest:
        raise FormatError("DE103 is missing for a transfer")
    key = make_key(cls, f["41"], stan, transmitted, acquirer)
    content_text = "|".join((pan, code, f.get("4", ""), f.get("49", ""), source, dest))
    content = hmac.new(content_key, content_text.encode(), hashlib.sha256).digest()
    return Parsed(
        mti=mti, cls=cls, pan=pan, expiry=expiry, code=code, amount_minor=amount,
        currency=currency, terminal_id=f["41"], terminal=f["41"].strip(),
        merchant=f["42"].strip(), stan=stan, transmitted=transmitted, acquirer=acquirer,
        original=original, actual_minor=actual, pin_block=pin_block, ksn=ksn,
        source_account=source, dest_account=dest, key=key, content=content,
    )



# -- the comparison --------------------------------------------------------------

FIELD_NAMES = ["2", "3", "4", "7", "11", "12", "13", "14", "22", "32", "35", "41", "42", "49",
               "52", "62", "64", "90", "95", "102", "103", "128"]
VALID = {
    "2": "4761739001010010", "3": "000000", "4": "000000001000", "7": "0301120000",
    "11": "000123", "12": "120000", "13": "0301", "14": "2812", "22": "051",
    "32": "00012345", "35": "4761739001010010=2812101", "41": "TERM0003",
    "42": "MERCHANT0000001", "49": "156", "52": "0123456789ABCDEF",
    "62": "FFFF9876543210E00001", "64": "0011223344556677",
    "90": "0200" + "000122" + "0301115959" + "00000012345" + "0" * 11,
    "95": "000000000500" + "0" * 30, "102": "6222020000000015", "103": "6222020000000023",
}
VALUES = st.one_of(
    st.text(alphabet="0123456789ABCDEFabcdef=Dd x\u0660", max_size=45),
    st.sampled_from(["", " ", "0230120000", "1332000000", "0431235959", "0229235959",
                     "4761739001010010D2812", "400000", "12345678901234567890",
                     "0123456789abcdef", "00000000000000000000123"]),
)


def _outcome(parse: object, fields: Mapping[str, str]) -> Parsed | str:
    try:
        return parse(fields, KEY)  # type: ignore[operator, no-any-return]
    except FormatError:
        return "30"


@given(
    mti=st.sampled_from([*_CLASS_OF_MTI, "0800", "0300", "", "x"]),
    overrides=st.dictionaries(st.sampled_from(FIELD_NAMES), VALUES, max_size=4),
    drop=st.sets(st.sampled_from(FIELD_NAMES), max_size=4),
)
def test_parse_request_decides_as_the_reference(mti: str, overrides: dict[str, str],
                                                drop: set[str]) -> None:
    fields = {"t": mti, **VALID, **overrides}
    for name in drop:
        fields.pop(name, None)
    assert _outcome(parse_request, fields) == _outcome(reference_parse_request, fields)


def test_a_well_formed_purchase_parses() -> None:
    fields = {"t": "0200", **{k: VALID[k] for k in MANDATORY["020"]}, "2": VALID["2"]}
    parsed = parse_request(fields, KEY)
    assert parsed == reference_parse_request(fields, KEY)
    assert parsed.key == make_key("020", "TERM0003", "000123", "0301120000", "")
