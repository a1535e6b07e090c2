"""Where to send a user after login: only back to this site.

A ``next`` value comes from the client, so it is an open-redirect vector (OWASP Unvalidated
Redirects and Forwards Cheat Sheet). :func:`safe_next` keeps a value only if it is a path on this
site, and otherwise falls back to a default. The rules:

- It must start with exactly one ``/``: ``//host`` and ``/\\host`` are scheme-relative URLs to
  another host (browsers read ``\\`` as ``/``), and anything that does not start with ``/`` may
  carry a scheme (``https:``, ``javascript:``, ``data:``) or be relative to the current page.
- No backslash anywhere; no control character, whitespace, format character (bidi overrides,
  zero-width characters) or unassigned code point anywhere. Browsers silently drop tabs and
  newlines from URLs, so ``/\\t/evil.example`` would become ``//evil.example``.
- Decoding the value (repeatedly, for double encoding) must not produce ``//`` or ``/\\`` at the
  start, nor control, format or line-separator characters anywhere: a server or proxy that
  decodes ``/%2F%2Fevil.example`` before redirecting again would otherwise leave the site.
- At most :data:`MAX_NEXT_LENGTH` characters.
- Other characters outside the URL grammar (letters in a path such as ``/café``, quotes, angle
  brackets) are kept, percent-encoded, so the result is plain ASCII URL text.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import quote, unquote

__all__ = ["MAX_NEXT_LENGTH", "login_redirect_url", "safe_next"]

MAX_NEXT_LENGTH = 2048
_MAX_DECODE_ROUNDS = 4
# Control, format, surrogate, private-use, unassigned, and every kind of separator/space.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
# Once decoded, spaces are fine ("/my%20file") but controls and line breaks are not.
_REFUSED_WHEN_DECODED = frozenset({"Cc", "Cf", "Zl", "Zp"})
# RFC 3986 reserved and unreserved characters plus '%', which must stay as they are.
_URL_SAFE = "/?#[]@!$&'()*+,;=:-._~%"


def safe_next(value: str | None, default: str = "/") -> str:
    """``value`` if it is a path on this site, else ``default``.

    Query and fragment are kept (``/account?tab=1#x`` stays as it is); characters outside the
    URL grammar come back percent-encoded. ``default`` is trusted and returned unchecked.
    """
    if not isinstance(value, str) or not value or len(value) > MAX_NEXT_LENGTH:
        return default
    if any(_refused_character(ch) for ch in value) or not _is_local_path(value):
        return default
    decoded = value
    for _ in range(_MAX_DECODE_ROUNDS):
        previous, decoded = decoded, unquote(decoded)
        if decoded == previous:
            break
        if not _is_local_path(decoded) or any(
            unicodedata.category(ch) in _REFUSED_WHEN_DECODED for ch in decoded
        ):
            return default
    else:
        return default  # still decoding after several rounds: nobody needs that but an attacker
    # Characters outside the URL grammar (non-ASCII, quotes, angle brackets) go out
    # percent-encoded, so what reaches a header or a page is plain URL text.
    return quote(value, safe=_URL_SAFE)


def login_redirect_url(login_path: str, next_path: str | None) -> str:
    """The login page's URL carrying ``next_path`` (made safe) as its ``next`` parameter.

    ``login_path`` must itself be a local path (it is configuration, so a bad one raises
    ``ValueError``); when it already has a query, ``next`` is appended to it.
    """
    if safe_next(login_path, default="") != login_path or "#" in login_path:
        raise ValueError(f"login_path {login_path!r} is not a local path")
    separator = "&" if "?" in login_path else "?"
    return f"{login_path}{separator}next={quote(safe_next(next_path), safe='/')}"


def _refused_character(ch: str) -> bool:
    return ch == "\\" or ch.isspace() or unicodedata.category(ch) in _REFUSED_CATEGORIES


def _is_local_path(value: str) -> bool:
    """Starts with exactly one slash, also once a browser has resolved its dot segments
    (``/..//evil.example`` becomes ``//evil.example``, a path that a later relative redirect
    would take off the site)."""
    if not value.startswith("/") or value[1:2] in ("/", "\\"):
        return False
    path = value.split("?", 1)[0].split("#", 1)[0].replace("\\", "/")
    resolved = _remove_dot_segments(path)
    return resolved[1:2] not in ("/", "\\")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, as browsers apply it to a path."""
    output: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    if path.rsplit("/", 1)[-1] in (".", ".."):
        output.append("")  # "/a/.." names the directory "/"
    return "/" + "/".join(output)
