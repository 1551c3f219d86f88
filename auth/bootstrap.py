"""The first admin: from ADMIN_EMAIL/ADMIN_PASSWORD, or (paper mode, nothing configured, no users
yet) a generated password that is returned so `app.main()` can print it once to stderr. It is
never logged."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from auth.users import Role, UserStore, generate_password
from config.settings import Settings

log = logging.getLogger(__name__)

GENERATED_ADMIN_EMAIL = "admin@localhost"


@dataclass(frozen=True, slots=True)
class GeneratedAdmin:
    email: str
    password: str


def ensure_first_admin(users: UserStore, settings: Settings, *, allow_generated: bool) -> GeneratedAdmin | None:
    """Create the configured admin if missing. Redis stays the source of truth afterwards: an
    existing user's password is not overwritten from the environment (update-credentials would
    otherwise be undone at every restart)."""
    if settings.admin_email and settings.admin_password:
        if users.get(settings.admin_email.strip().lower()) is None:
            users.add(settings.admin_email, settings.admin_password, Role.ADMIN)
            log.info("created admin user %s from ADMIN_EMAIL", settings.admin_email.strip().lower())
        return None
    if settings.is_live or not allow_generated or users.count_admins() > 0:
        return None
    password = generate_password()
    users.add(GENERATED_ADMIN_EMAIL, password, Role.ADMIN)
    log.warning("created admin user %s with a generated password (printed once on stderr)", GENERATED_ADMIN_EMAIL)
    return GeneratedAdmin(GENERATED_ADMIN_EMAIL, password)
