"""Safe redirects after login: a ``next`` parameter that can only lead back to this site.

:func:`safe_next` keeps a client-supplied ``next`` only when it is a path on this site (no
``//host``, no ``/\\host``, no scheme, nothing that decodes into one) and otherwise returns a
default; :func:`login_redirect_url` builds ``/login?next=...`` around it. The rules are written
in :mod:`coatcheck._core.redirects` and in ``docs/passwords.md`` ("Safe redirects");
``coatcheck.integrations.flask`` re-exports :func:`safe_next` too.
"""

from __future__ import annotations

from ._core.redirects import MAX_NEXT_LENGTH, login_redirect_url, safe_next

__all__ = ["MAX_NEXT_LENGTH", "login_redirect_url", "safe_next"]
