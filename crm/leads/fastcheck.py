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
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import FunctionType
from typing import Any

import phonenumbers
from email_validator import validate_email as _validate_email
from phonenumbers import phonenumberutil


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


_original_digits_only = phonenumberutil.normalize_digits_only
_NOT_ASCII_DIGIT = {code: None for code in range(128) if not chr(code).isdigit()}


def _normalize_digits_only(number: Any, keep_non_digits: bool = False) -> str:
    if type(number) is str and number.isascii():
        return number if keep_non_digits else number.translate(_NOT_ASCII_DIGIT)
    result: str = _original_digits_only(number, keep_non_digits)
    return result


parse: Callable[..., phonenumbers.PhoneNumber] = _with_globals(
    phonenumberutil.parse, {"normalize_digits_only": _normalize_digits_only}
)


_domain_check = _validate_email.__globals__.get("validate_email_domain_name")
validate_email: Callable[..., Any] = (
    _with_globals(
        _validate_email, {"validate_email_domain_name": functools.lru_cache(maxsize=20_000)(_domain_check)}
    )
    if _domain_check is not None
    else _validate_email  # a version laid out otherwise: the library as it is
)
