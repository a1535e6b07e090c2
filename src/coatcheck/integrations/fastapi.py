"""FastAPI dependencies that declare coatcheck's security schemes in OpenAPI.

The :class:`~coatcheck.asgi.SessionMiddleware` authenticates every request; these dependencies
only *declare* how (a session cookie, ``apiKey`` in cookie, and ``Authorization: Bearer``, ``http``
bearer), so ``/docs`` shows both schemes, a lock on each protected route, and its "Authorize"
button works with a bearer token from ``POST /token``::

    from typing import Annotated
    from fastapi import Depends
    from coatcheck.integrations.fastapi import SessionAuth

    auth = SessionAuth(manager.config)           # the cookie name comes from the configuration
    CurrentUser = Annotated[User, Depends(auth.user)]

    @app.get("/me")
    async def me(user: CurrentUser) -> User: ...

A route's two schemes are alternatives (OpenAPI lists one requirement per scheme): either one
signs the request in. The answers are the same as the Starlette helpers': 401
``{"error": "unauthenticated"}`` (with the bearer challenge for bearer clients), a 303 to the login
page for :meth:`SessionAuth.page`, 401 ``{"error": "reauthentication_required"}`` for
:meth:`SessionAuth.fresh`.

:data:`CurrentUser` and :data:`OptionalUser` are ready-made for the default configuration (cookie
``__Host-session``); with another cookie name, build a :class:`SessionAuth` from your config.
"""

# No "from __future__ import annotations": FastAPI reads the dependencies' annotations at run
# time, and those of the closures below name local variables (the schemes).
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from .._core.config import CookieConfig, SessionConfig
from .starlette import RequireFresh, RequireUserPage, current_user, require_user

__all__ = ["CurrentUser", "OptionalUser", "SessionAuth"]

Dependency = Callable[..., Awaitable[Any]]

_COOKIE_DESCRIPTION = (
    "The coatcheck session cookie, set by the login endpoint. Browsers send it by themselves; "
    "unsafe requests also need the XSRF-TOKEN cookie's value in an X-XSRF-TOKEN header."
)
_BEARER_DESCRIPTION = "A coatcheck bearer token (<id>.<secret>), as issued for API clients."


class SessionAuth:
    """Dependencies for protected routes, declaring the session cookie and bearer schemes."""

    def __init__(
        self,
        config: SessionConfig | None = None,
        *,
        cookie_scheme_name: str = "sessionCookie",
        bearer_scheme_name: str = "bearerToken",
    ) -> None:
        cookie_name = (config.cookie if config is not None else CookieConfig()).effective_name
        self.cookie_scheme = APIKeyCookie(
            name=cookie_name,
            scheme_name=cookie_scheme_name,
            description=_COOKIE_DESCRIPTION,
            auto_error=False,
        )
        self.bearer_scheme: HTTPBearer | None = None
        if config is None or config.bearer:
            self.bearer_scheme = HTTPBearer(
                scheme_name=bearer_scheme_name, description=_BEARER_DESCRIPTION, auto_error=False
            )
        self.user: Dependency = self._declaring(require_user)
        """The signed-in user, else 401."""
        self.optional_user: Dependency = self._declaring(current_user)
        """The signed-in user or ``None`` (the route still shows the schemes)."""

    def fresh(self, max_age: float = 300) -> Dependency:
        """The user, who must have fully signed in within ``max_age`` seconds, else 401."""
        return self._declaring(RequireFresh(max_age))

    def page(self, login_path: str | None = None) -> Dependency:
        """The user, else a 303 to the login page carrying this page as a safe ``next``."""
        return self._declaring(RequireUserPage(login_path))

    def _declaring(self, inner: Callable[[Request], Awaitable[Any]]) -> Dependency:
        """``inner`` as a dependency that also depends on the security schemes. The schemes'
        values are not used: the middleware already read and checked the credentials."""
        cookie, bearer = self.cookie_scheme, self.bearer_scheme
        if bearer is None:

            async def cookie_only(
                request: Request, _cookie: Annotated[str | None, Security(cookie)] = None
            ) -> Any:
                return await inner(request)

            return cookie_only

        async def either(
            request: Request,
            _cookie: Annotated[str | None, Security(cookie)] = None,
            _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
        ) -> Any:
            return await inner(request)

        return either


default_auth = SessionAuth()
CurrentUser = Annotated[Any, Depends(default_auth.user)]
"""The signed-in user (401 otherwise), for the default configuration's cookie name."""
OptionalUser = Annotated[Any, Depends(default_auth.optional_user)]
"""The signed-in user or ``None``, for the default configuration's cookie name."""
