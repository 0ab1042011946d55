"""The import's faster phone and email checks give exactly the libraries' answers."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import phonenumbers
import pytest
from email_validator import validate_email

from crm.leads import fastcheck
from crm.leads.phones import e164_or_none

REGIONS = ("BR", "US", "GB", "DE", "PT", "AR", "MX", "IN", "IT", "FR", "RU", "CN", "JP", "AU", "NG", "ZZ")
WRITTEN = [
    "(11) 98765-4321", "011 98765 4321", "+55 11 98765-4321", "0055 11 98765-4321", "5511987654321",
    "11 8765-4321", "0 15 11 98765 4321", "(415) 555-2671", "1-800-FLOWERS", "+1 (415) 555-2671 ext. 12",
    "415.555.2671 x34", "tel:+1-415-555-2671", "tel:555-2671;phone-context=+1-415", "020 7946 0958",
    "+44 (0)20 7946 0958", "030 123456", "+49 30 123456", "912 345 678", "00351 912 345 678",
    "011 15-2345-6789", "+54 9 11 2345-6789", "06 12 34 56 78", "+33 6 12 34 56 78", "02 1234 5678",
    "+39 02 1234 5678", "+91 98765 43210", "\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19\uff10",
    "\u0661\u0661 \u0669\u0668\u0667\u0666\u0665 \u0664\u0663\u0662\u0661",
    "+\u0665\u0665 \u0661\u0661 \u0669\u0668\u0667\u0666\u0665\u0664\u0663\u0662\u0661",
    "", " ", "+", "++55 11 98765 4321", "abc", "12", "123", "+0 123 456", "+999 123 4567",
    "11 98765-4321 / 11 91234-5678", "(11) 9 8765 4321 #", "+55 11 98765-4321;ext=22", "Tel: 11 98765-4321",
    "11\u00a098765\u20114321", "\u202d+55 11 98765 4321\u202c", "+55-11-98765-4321.", "5" * 30,
]  # fmt: skip
EMAILS = [
    "ana@example.com", "Ana.Lima@EXAMPLE.COM", "postmaster@Example.com", "ABUSE@example.com",
    "joão@exemplo.com.br", "ana@exämple.com", "ana@xn--exmple-cua.com", "ana@localhost", "ana@example",
    "ana@123.com", "ana@[127.0.0.1]", '"ana lima"@example.com', "Ana <ana@example.com>", "ana@@example.com",
    "ana@", "@example.com", "ana..lima@example.com", ".ana@example.com", "ana@-example.com",
    "ana@example..com", "a" * 65 + "@example.com", "ana@" + "a" * 250 + ".com", "ana@example.com.",
    "ana@ex ample.com", "ana@EXAMPLE.test", "ana@example.invalid", "ana+tag@gmail.com", "ana@gmail.com",
    "ana@sub.domain.co.uk", "ana@éxample.com", "ana@example.c", "ana@example.123", "ANA@ÉXAMPLE.COM",
]  # fmt: skip


def outcome(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The result, or the exception's type and message: both must be the same."""
    try:
        result = function(*args, **kwargs)
    except Exception as exc:  # compared, not swallowed
        return (type(exc), str(exc), getattr(exc, "error_type", None))
    return result


@pytest.mark.parametrize("region", REGIONS)
def test_phones_parse_exactly_as_phonenumbers_does(region: str) -> None:
    rng = random.Random(region)
    alphabet = "0123456789" * 4 + " ()-.+/x#;*~" + "abcEXT" + "\u0661\u0662\u0663\uff14\uff15"
    fuzz = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20))) for _ in range(1500)]
    digits = ["".join(rng.choice("0123456789") for _ in range(rng.randint(2, 16))) for _ in range(1500)]
    for text in WRITTEN + fuzz + digits + ["+" + d for d in digits[:500]]:
        assert outcome(fastcheck.parse, text, region) == outcome(phonenumbers.parse, text, region), text
        assert e164_or_none(text, region, parse=fastcheck.parse) == e164_or_none(text, region), text


def test_emails_are_checked_exactly_as_email_validator_does() -> None:
    rng = random.Random(6)
    alphabet = 'abcXYZ09.-_+@é "<>[]'
    fuzz = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30))) for _ in range(3000)]
    options = {"check_deliverability": False, "globally_deliverable": False}
    for _twice in range(2):  # the second time, domains come from the cache
        for text in EMAILS + fuzz:
            fast, slow = (
                outcome(fastcheck.validate_email, text, **options),
                outcome(validate_email, text, **options),
            )
            if isinstance(slow, tuple):
                assert fast == slow, text
            else:
                assert (fast.normalized, fast.ascii_email, fast.smtputf8) == (
                    slow.normalized,
                    slow.ascii_email,
                    slow.smtputf8,
                ), text


def test_the_libraries_themselves_are_left_alone() -> None:
    from email_validator import validate_email as module_function
    from phonenumbers import phonenumberutil

    assert fastcheck.parse is not phonenumbers.parse and phonenumberutil.parse is phonenumbers.parse
    assert phonenumberutil.normalize_digits_only.__module__ == "phonenumbers.phonenumberutil"
    assert fastcheck.validate_email is not module_function
    assert module_function.__globals__["validate_email_domain_name"].__module__ == "email_validator.syntax"


def plain_numbers(rng: random.Random, country_code: str, count: int) -> list[str]:
    """Numbers written the plain ways (digits, spaces, dashes, dots, parentheses, a leading + or
    00), around the shapes that take ``parse`` down its different paths: the region's country
    code without +, national and carrier prefixes, too few and too many digits, leading zeros."""
    heads = ["", "", "", "0", "00", "0" + country_code, country_code, "+", "+" + country_code, "+0", "9"]
    heads += ["0" + str(rng.randint(10, 99)), "90" + str(rng.randint(10, 99)), "+" + str(rng.randint(1, 999))]
    written = []
    for _ in range(count):
        digits = rng.choice(heads) + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 17)))
        out = []
        for ch in digits:
            if rng.random() < 0.2:
                out.append(rng.choice([" ", "-", ".", "(", ")", " (", ") ", "--"]))
            out.append(ch)
        written.append("".join(out))
    return written


@pytest.mark.parametrize("region", [*REGIONS, "br", "CA", "GG", "VA", "KZ"])
def test_plain_numbers_give_exactly_what_phonenumbers_gives(region: str) -> None:
    rng = random.Random("plain" + region)
    upper = region.upper()
    code = str(phonenumbers.country_code_for_region(upper))
    texts = WRITTEN + plain_numbers(rng, code, 12_000)
    texts += ["(11) 98765-4321", "+55 (11) 98765.4321", "(+55) 11 98765-4321", "55 11 98765 4321", "5"]
    answered = valid = 0
    for text in texts:
        expected = e164_or_none(text, region)
        valid += expected is not None
        assert fastcheck.e164_or_none(text, upper) == expected, text
        plain = fastcheck.plain_e164(e164_or_none.__globals__["as_written"](text), upper)
        if plain is not None:
            assert plain == expected, text
            answered += 1
    if upper != "ZZ":
        assert answered > valid // 2  # the shortcut is really taken


def test_plain_numbers_of_every_region() -> None:
    """Every region's metadata, the regions sharing a country code (CA, GG...) included."""
    rng = random.Random(55)
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        code = str(phonenumbers.country_code_for_region(region))
        for text in plain_numbers(rng, code, 300):
            assert fastcheck.e164_or_none(text, region) == e164_or_none(text, region), (region, text)


def plain_emails(rng: random.Random, count: int) -> list[str]:
    atext = "abcxyzABCXYZ0189.!#$%&'*+-/=?^_`{|}~"
    domains = [
        "gmail.com", "Gmail.COM", "uol.com.br", "sub.domain.co.uk", "xn--exmple-cua.com", "xn--a.com",
        "localhost", "example", "example.test", "example.invalid", "local", "123.com", "example.123",
        "-example.com", "example-.com", "exa_mple.com", "example..com", "example.com.", ".example.com",
        "a" * 63 + ".com", "a" * 64 + ".com", ("a" * 60 + ".") * 4 + "com", "[127.0.0.1]", "[IPv6:::1]",
        "ex ample.com", "example.c", "EXAMPLE.ARPA", "onion", "x.onion", "mail.example.com",
    ]  # fmt: skip
    boxes = ["postmaster", "Postmaster", "INFO", "Sales", "www", "noc"]
    written = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.1:
            local = rng.choice(boxes)
        elif roll < 0.15:
            local = "a" * rng.randint(60, 250)
        else:
            local = "".join(rng.choice(atext) for _ in range(rng.randint(0, 20)))
        written.append(local + rng.choice(["@", "@", "@", "@@", ""]) + rng.choice(domains))
    return written


def test_plain_emails_give_exactly_what_email_validator_gives() -> None:
    rng = random.Random(7)
    options = {"check_deliverability": False, "globally_deliverable": False}
    texts = EMAILS + plain_emails(rng, 40_000)
    answered = 0
    for text in texts:
        fast = outcome(fastcheck.normalized_email, text)
        slow = outcome(validate_email, text, **options)
        assert fast == (slow if isinstance(slow, tuple) else slow.normalized), text
        if fastcheck.plain_email(text) is not None:
            answered += 1
    assert answered > len(texts) // 10
