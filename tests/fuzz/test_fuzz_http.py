"""Property tests for request header parsing: Authorization gives a token, nothing, or the
documented 400; X-Forwarded-For gives the peer or a real untrusted address, never raising."""

from __future__ import annotations

import ipaddress

from hypothesis import example, given
from hypothesis import strategies as st

from coatcheck._core.cookies import parse_cookies
from coatcheck._core.http import (
    MAX_AUTHORIZATION_BYTES,
    RequestView,
    client_address,
    presented_token,
)
from coatcheck.errors import HTTPError
from coatcheck.testing import test_config

CONFIG = test_config()
PROXIES = ("10.0.0.0/8", "fd00::/8", "192.0.2.1")

latin1 = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=80)
schemes = st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "Digest", "", "Be arer", "é"])
authorization = st.one_of(
    latin1,
    st.text(max_size=40),
    st.builds(
        lambda s, sep, c: s + sep + c, schemes, st.sampled_from([" ", "  ", "\t", ""]), latin1
    ),
    st.builds(
        lambda c: "Bearer " + c, st.text(alphabet="ab.-_~+/=", min_size=1).map(lambda t: t * 300)
    ),
)
ip = st.one_of(
    st.ip_addresses().map(str),
    st.sampled_from(["10.1.2.3", "fd00::1", "192.0.2.1", "::ffff:10.0.0.1", "fe80::1%eth0"]),
)
hop = st.one_of(ip, latin1, st.sampled_from(["", " ", "unknown", "1.2.3.4:80", "[::1]"]))
forwarded_for = st.lists(hop, max_size=5).map(", ".join)


@given(st.lists(authorization, max_size=2), st.lists(latin1, max_size=2))
def test_authorization_gives_token_nothing_or_400(auths: list[str], cookies: list[str]) -> None:
    """Any Authorization and Cookie headers give a token, no token, or HTTPError 400; a bearer
    token handed on is printable ASCII without whitespace, within the size cap."""
    headers = [("authorization", a) for a in auths] + [("cookie", c) for c in cookies]
    request = RequestView("GET", "https", headers, "203.0.113.5")
    cookies = parse_cookies(request.get_all("cookie"))
    try:
        presented = presented_token(request, CONFIG, cookies)
    except HTTPError as error:
        refused: HTTPError | None = error
    else:
        refused = None
    if refused is not None:
        assert (refused.status_code, refused.body) == (400, {"error": "invalid_request"})
        return
    if presented is not None and presented.transport == "bearer":
        (credential,) = presented.values
        assert credential.isascii()
        assert credential.isprintable()
        assert not any(c.isspace() for c in credential)
        assert len(auths[0]) <= MAX_AUTHORIZATION_BYTES


@given(ip, st.lists(forwarded_for, max_size=3))
@example("10.1.2.3", ["6.6.6.6, 198.51.100.7, 10.0.0.1"])
@example("192.0.2.1", ["2001:db8::1", "fd00::7"])
def test_client_address_is_peer_or_an_untrusted_hop(peer: str, xffs: list[str]) -> None:
    """The client address is the socket peer, or an address from X-Forwarded-For that is not a
    trusted proxy, and only when the peer is a trusted proxy."""
    request = RequestView("GET", "https", [("x-forwarded-for", v) for v in xffs], peer)
    found = client_address(request, PROXIES)
    if found == peer:
        return
    address = ipaddress.ip_address(found)
    networks = [ipaddress.ip_network(n, strict=False) for n in PROXIES]
    assert any(ipaddress.ip_address(peer) in n for n in networks)
    assert not any(address in n for n in networks)
    assert any(found in [h.strip() for h in v.split(",")] for v in xffs)


@given(ip, st.lists(forwarded_for, max_size=3))
def test_without_trusted_proxies_the_peer_is_the_client(peer: str, xffs: list[str]) -> None:
    """With no trusted proxy configured, X-Forwarded-For never changes the client address."""
    request = RequestView("GET", "https", [("x-forwarded-for", v) for v in xffs], peer)
    assert peer == client_address(request, ())
