"""Access rules for views: signed in, and (for team management) an owner or admin."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import g
from flask_login import login_required

from crm.errors import Forbidden

F = TypeVar("F", bound=Callable[..., Any])


def manager_required(view: F) -> F:
    @wraps(view)
    @login_required
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not g.membership.role_enum.manages_team:
            raise Forbidden()
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
