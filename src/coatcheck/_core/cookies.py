"""Cookies: the only module that parses or spells them.

Parsing is deliberately strict: names are matched byte for byte (no URL-decoding, no trimming,
no case folding), so ``__%48ost-session`` or `` __Host-session`` never stand in for the real
name. Several ``Cookie`` headers are read in order. Oversized values, and values with control
characters, are ignored rather than raised on.

Size: browsers send every cookie of a site in one header, so a site with many cookies easily
passes 8 KiB, and dropping such a header whole would sign its user out (and the next unsafe
request would replace the live session cookie with a new one). Cookie headers up to
:data:`MAX_COOKIE_HEADER_BYTES` in all are therefore parsed in full, in linear time; beyond that
the middlewares refuse the request with 431 (:func:`~coatcheck._core.http.cookie_header_error`)
rather than guess.
"""

from __future__ import annotations

from collections.abc import Container, Iterable

from .config import CookieConfig

MAX_COOKIE_HEADER_BYTES = 32 * 1024
"""The most ``Cookie`` header bytes (all headers together) a request may carry: 431 beyond."""
MAX_COOKIE_VALUE_BYTES = 4096


# RFC 6265 cookie-octet: visible ASCII except DQUOTE, comma, semicolon and backslash. A value is
# checked by deleting these bytes from it: what is left over is a character outside the set
# (one C pass over the bytes, several times faster than a regular expression on a 700-byte seal).
_COOKIE_OCTETS = bytes(b for b in range(0x21, 0x7F) if b not in (0x22, 0x2C, 0x3B, 0x5C))


def _clean_value(value: str) -> str | None:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if (
        len(value) > MAX_COOKIE_VALUE_BYTES
        or not value.isascii()
        or value.encode("ascii").translate(None, _COOKIE_OCTETS)
    ):
        return None
    return value


def parse_cookies(
    headers: Iterable[str], known: Container[str] | None = None
) -> dict[str, list[str]]:
    """Every cookie in the given ``Cookie`` header values: name -> values, in order.

    Headers beyond :data:`MAX_COOKIE_HEADER_BYTES` in all are not read (the middlewares refuse
    such requests before parsing); a value with control characters or non-ASCII is skipped.
    Names are kept exactly as sent. The caller decides what several values of one name mean
    (coatcheck tries each in turn).

    ``known``: values already known to be clean (each one a value this function returned
    before, or one coatcheck wrote itself), taken without checking their characters again: a
    sealed session's 700-byte value, sent on every request, is looked up instead of scanned.
    """
    found: dict[str, list[str]] = {}
    budget = MAX_COOKIE_HEADER_BYTES
    for header in headers:
        budget -= len(header)
        if budget < 0:
            break
        for pair in header.split(";"):
            # RFC 6265 5.4: pairs are separated by "; " -- strip only the single leading space
            # the separator puts there; any other whitespace makes the name not match.
            if pair.startswith(" "):
                pair = pair[1:]
            key, sep, value = pair.partition("=")
            if not sep:
                continue
            cleaned = value if known is not None and value in known else _clean_value(value)
            if cleaned is not None:
                if key in found:
                    found[key].append(cleaned)
                else:
                    found[key] = [cleaned]
    return found


def read_cookie(headers: Iterable[str], name: str) -> list[str]:
    """Every value of cookie ``name`` (matched byte for byte) across ``Cookie`` headers."""
    return parse_cookies(headers).get(name, [])


def device_cookie_name(config: CookieConfig) -> str:
    """The login guard's device cookie, prefixed like the session cookie (``__Host-device``)."""
    session_name = config.effective_name
    for prefix in ("__Host-", "__Secure-"):
        if session_name.startswith(prefix):
            return prefix + "device"
    return "coatcheck_device"


def _attributes(config: CookieConfig, *, http_only: bool) -> list[str]:
    parts = [f"Path={config.path}"]
    if config.domain is not None:
        parts.append(f"Domain={config.domain}")
    if config.secure:
        parts.append("Secure")
    if http_only:
        parts.append("HttpOnly")
    parts.append("SameSite=" + config.same_site.capitalize())
    return parts


def set_cookie(
    config: CookieConfig,
    name: str,
    value: str,
    *,
    max_age: int | None = None,
    http_only: bool = True,
) -> str:
    """A ``Set-Cookie`` value. ``max_age=None`` makes a browser-session cookie."""
    parts = [f"{name}={value}"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    parts.extend(_attributes(config, http_only=http_only))
    return "; ".join(parts)


def clear_cookie(config: CookieConfig, name: str, *, http_only: bool = True) -> str:
    """A ``Set-Cookie`` value that makes the browser drop ``name`` (same attributes, expired)."""
    parts = [f'{name}=""', "Max-Age=0", "Expires=Thu, 01 Jan 1970 00:00:00 GMT"]
    parts.extend(_attributes(config, http_only=http_only))
    return "; ".join(parts)
