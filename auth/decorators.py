"""Route guards. Other packages import these names: `viewer_required`, `admin_required`.

- `viewer_required`: any logged-in user (admin or viewer) with a valid, unrevoked token.
- `admin_required`: admins only; a valid viewer token gets 403.

The role is read from Redis on each request (not trusted from the token), so demoting or removing
a user takes effect at once. Each wrapper carries `required_role` for the OpenAPI generator.
"""
from __future__ import annotations

from functools import wraps
from typing import Any, Callable, TypeVar, cast

from flask_jwt_extended import current_user, verify_jwt_in_request

from auth.users import Role, User
from domain.envelope import ApiError

F = TypeVar("F", bound=Callable[..., Any])


def _guard(role: Role | None) -> Callable[[F], F]:
    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            verify_jwt_in_request()  # raises JWT errors -> 401 JSON via auth.tokens callbacks
            user = cast(User, current_user)
            if role is Role.ADMIN and user.role is not Role.ADMIN:
                raise ApiError(403, "this action needs the admin role; your account is read-only", error="forbidden")
            return view(*args, **kwargs)

        wrapper.required_role = (role or Role.VIEWER).value  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorate


viewer_required: Callable[[F], F] = _guard(None)
admin_required: Callable[[F], F] = _guard(Role.ADMIN)


def current_user_email() -> str:
    return cast(User, current_user).email
