"""Faster, exactly equivalent versions of the two checks that take most of an import's Python time.

A million-row import parses a million phones (``phonenumbers.parse``, ~20 µs each) and most of
a million emails (``email_validator``, ~25 µs each). Both spend much of that time on one inner
function whose result can be had more cheaply with the same answer:

- ``phonenumbers``' ``normalize_digits_only`` looks every character up in the Unicode database,
  one Python call each. For ASCII text the only characters with a digit value are ``0``-``9``,
  so ``str.translate`` gives the same string; anything else still goes to the original.
- ``email_validator``'s ``validate_email_domain_name`` (IDNA and DNS label rules) is a pure
  function of the domain and two flags, and a file's emails share a few hundred domains: its
  results are remembered (errors are not, so they are raised exactly as before).

Nothing in the libraries is changed for anyone else: ``parse`` and ``validate_email`` here are
copies of the libraries' own functions (and of the module functions they call) whose module
globals hold the replacement. Same code, same metadata, same results and exceptions; the tests
compare them with the originals on thousands of inputs.

On top of those, ``e164_or_none`` and ``normalized_email`` answer the shapes nearly every row of
a spreadsheet has (a number of ASCII digits with spaces, dashes, dots and parentheses; an ASCII
address of one dot-atom local part and a domain seen before) by running only the steps of the
libraries that such a text reaches, with the libraries' own helpers and metadata, and hand
everything else to the full functions. They answer only what they are sure of, and the tests
compare their answers with the libraries' on hundreds of thousands of inputs.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from types import FunctionType
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError
from email_validator import validate_email as _validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES, DOT_ATOM_TEXT, EMAIL_MAX_LENGTH
from phonenumbers import phonenumberutil as pnu
from phonenumbers.phonemetadata import PhoneMetadata
from phonenumbers.re_util import re_compile  # the library's own cache of compiled patterns

from crm.leads import phones


def _with_globals(function: Callable[..., Any], replacements: dict[str, Any]) -> Callable[..., Any]:
    """A copy of ``function`` that sees ``replacements`` among its module's globals, as do copies
    of every other function of that module (which it may call)."""
    original: dict[str, Any] = function.__globals__
    shadow = dict(original)
    for name, value in original.items():
        if isinstance(value, FunctionType) and value.__globals__ is original:
            copy = FunctionType(value.__code__, shadow, value.__name__, value.__defaults__, value.__closure__)
            copy.__kwdefaults__ = value.__kwdefaults__
            copy.__dict__.update(value.__dict__)
            shadow[name] = copy
    shadow.update(replacements)
    copied: Callable[..., Any] = shadow[function.__name__]
    return copied


_original_digits_only = pnu.normalize_digits_only
_NOT_ASCII_DIGIT = {code: None for code in range(128) if not chr(code).isdigit()}


def _normalize_digits_only(number: Any, keep_non_digits: bool = False) -> str:
    if type(number) is str and number.isascii():
        return number if keep_non_digits else number.translate(_NOT_ASCII_DIGIT)
    result: str = _original_digits_only(number, keep_non_digits)
    return result


parse: Callable[..., phonenumbers.PhoneNumber] = _with_globals(
    pnu.parse, {"normalize_digits_only": _normalize_digits_only}
)


_domain_check = _validate_email.__globals__.get("validate_email_domain_name")
validate_email: Callable[..., Any] = (
    _with_globals(
        _validate_email, {"validate_email_domain_name": functools.lru_cache(maxsize=20_000)(_domain_check)}
    )
    if _domain_check is not None
    else _validate_email  # a version laid out otherwise: the library as it is
)


# --- The common shapes, directly -----------------------------------------------------------------

_SEPARATORS = b" ()-."  # deleted from the text as bytes: 2.5x faster than str.translate
_NOT_POSSIBLE = (pnu.ValidationResult.TOO_SHORT, pnu.ValidationResult.INVALID_LENGTH)
_KEEPS_PREFIX = (*_NOT_POSSIBLE, pnu.ValidationResult.IS_POSSIBLE_LOCAL_ONLY)
_POSSIBLE = (pnu.ValidationResult.IS_POSSIBLE, pnu.ValidationResult.IS_POSSIBLE_LOCAL_ONLY)
_LENGTHS = range(pnu._MAX_LENGTH_FOR_NSN + 1)


@dataclass(frozen=True, slots=True)
class _Plan:
    """One metadata's parts that ``parse`` reaches for a plain number, compiled once."""

    metadata: Any
    country_code: int
    code_text: str
    idd: re.Pattern[str] | None  # the international prefix dialled from there
    national_prefix: re.Pattern[str] | None
    # ``_test_number_length`` (for the default type) looks only at the length: its answers
    lengths: tuple[Any, ...]

    @classmethod
    def of(cls, metadata: Any) -> _Plan:
        idd, prefix = metadata.international_prefix, metadata.national_prefix_for_parsing
        return cls(
            metadata,
            metadata.country_code,
            str(metadata.country_code),
            re_compile(idd) if idd is not None else None,
            re_compile(prefix) if prefix else None,
            tuple(pnu._test_number_length("0" * size, metadata) for size in _LENGTHS),
        )

    def length(self, national: str) -> Any:
        if len(national) < len(self.lengths):
            return self.lengths[len(national)]
        return pnu._test_number_length(national, self.metadata)


_region_plans: dict[str, _Plan | None] = {}
_code_plans: dict[int, _Plan] = {}


def _region_plan(region: str) -> _Plan | None:
    if region not in _region_plans:
        valid = region in pnu.SUPPORTED_REGIONS  # parse's own test (_is_valid_region_code)
        metadata = PhoneMetadata.metadata_for_region(region, None) if valid else None
        _region_plans[region] = _Plan.of(metadata) if metadata is not None else None
    return _region_plans[region]


def _code_plan(country_code: int) -> _Plan:
    """The metadata ``parse`` and ``is_possible_number`` use for a number of this country code."""
    plan = _code_plans.get(country_code)
    if plan is None:
        region = pnu.region_code_for_country_code(country_code)
        plan = _Plan.of(PhoneMetadata.metadata_for_region_or_calling_code(country_code, region))
        _code_plans[country_code] = plan
    return plan


def plain_e164(text: str, region: str) -> str | None:
    """The E.164 ``parse`` + ``is_possible_number`` + ``format_number`` give for ``text``, worked
    out directly when ``text`` is a plain number: ASCII, at most 250 characters, at least three
    digits, nothing else than spaces, dashes, dots and parentheses, and a + only as its first
    character. None when it is not plain, or not a possible number: the full parse decides then.

    For such a text ``parse`` finds no RFC 3966 context, no extension (each of its patterns needs
    a letter, #, ~, comma or semicolon), no letters to convert, and a viable number (three digits
    with valid punctuation), so what follows depends on the digits and the + alone: the steps
    below, in ``parse``'s order, with its helpers and the region's metadata.
    """
    if not text.isascii() or len(text) > pnu._MAX_INPUT_STRING_LENGTH:
        return None
    digits = text.encode().translate(None, _SEPARATORS).decode()  # ASCII: the same characters
    plus = digits[:1] == "+"
    if plus:
        if text[0] != "+":
            return None
        digits = digits[1:]
    if len(digits) < 3 or not digits.isdigit():
        return None
    region_plan = _region_plan(region)
    if region_plan is None:
        return None
    if plus:  # _maybe_extract_country_code, FROM_NUMBER_WITH_PLUS_SIGN
        country_code, national = pnu._extract_country_code(digits)
        if country_code == 0:  # INVALID_COUNTRY_CODE: parse tries again without the +
            return None
        plan = _code_plan(country_code)
    else:
        if region_plan.idd is not None and region_plan.idd.match(digits):
            return None  # an international prefix
        plan, country_code, national = region_plan, region_plan.country_code, digits
        metadata = region_plan.metadata
        if digits.startswith(region_plan.code_text):  # the region's country code without the +?
            _carrier, potential, _stripped = pnu._maybe_strip_national_prefix_carrier_code(
                digits[len(region_plan.code_text) :], metadata
            )
            general = metadata.general_desc
            if (
                not pnu._match_national_number(digits, general, False)
                and pnu._match_national_number(potential, general, False)
            ) or region_plan.length(digits) == pnu.ValidationResult.TOO_LONG:
                plan, national = _code_plan(country_code), potential
    if len(national) < pnu._MIN_LENGTH_FOR_NSN:
        return None
    if plan.national_prefix is not None and plan.national_prefix.match(national):
        _carrier, potential, _ = pnu._maybe_strip_national_prefix_carrier_code(national, plan.metadata)
        if plan.length(potential) not in _KEEPS_PREFIX:
            national = potential
    if not pnu._MIN_LENGTH_FOR_NSN <= len(national) <= pnu._MAX_LENGTH_FOR_NSN:
        return None
    # The national significant number is ``national`` itself (its leading zeros are kept as
    # Italian leading zeros), and is_possible_number tests it against the country code's metadata.
    if _code_plan(country_code).length(national) not in _POSSIBLE:
        return None
    return f"+{country_code}{national}"


def e164_or_none(raw: str, region: str) -> str | None:
    """``crm.leads.phones.e164_or_none`` with ``region`` in capitals: the same answers."""
    return plain_e164(phones.as_written(raw), region) or phones.e164_or_none(raw, region, parse=parse)


_domains: dict[str, tuple[str, str]] = {}  # domain as written → (domain, ASCII domain), the valid ones


def plain_email(text: str) -> str | None:
    """The ``normalized`` address ``validate_email(text, check_deliverability=False,
    globally_deliverable=False)`` gives, worked out directly for a plain address: ASCII, one @,
    no quote or angle bracket, an unquoted dot-atom local part, a domain that is no bracketed
    literal and passes the domain check. None otherwise: the full check decides then.

    For such a text ``split_email`` splits at the @ (ASCII is its own NFC form), the local part
    is returned as it is (lower-cased when it is one of RFC 2142's mailbox names), and the domain
    is what ``validate_email_domain_name`` says; then the three length checks.
    """
    if not text.isascii() or text.count("@") != 1 or '"' in text or "<" in text:
        return None
    local, _at, domain = text.partition("@")
    if not local or not domain or DOT_ATOM_TEXT.match(local) is None:
        return None
    if domain[0] == "[" and domain[-1] == "]":
        return None
    known = _domains.get(domain)
    if known is None:
        if _domain_check is None:
            return None
        try:
            info = _domain_check(domain, test_environment=False, globally_deliverable=False)
        except EmailNotValidError:
            return None
        known = (info["domain"], info["ascii_domain"])
        if len(_domains) < 20_000:
            _domains[domain] = known
    if local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:
        local = local.lower()
    normalized = local + "@" + known[0]
    if (
        len(text) > EMAIL_MAX_LENGTH
        or len(normalized.encode()) > EMAIL_MAX_LENGTH
        or len(local) + 1 + len(known[1]) > EMAIL_MAX_LENGTH
    ):
        return None
    return normalized


def normalized_email(text: str) -> str:
    """``validate_email(text, check_deliverability=False, globally_deliverable=False).normalized``:
    the same address, or the same EmailNotValidError."""
    normalized = plain_email(text)
    if normalized is not None:
        return normalized
    result: str = validate_email(text, check_deliverability=False, globally_deliverable=False).normalized
    return result
