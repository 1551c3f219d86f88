"""Users in Redis: `users:<email>` (hash) and `users:index` (set of emails).

Passwords are stored only as salted scrypt hashes (werkzeug). Each user has a token epoch at
`auth:token_epoch:<email>`; every credential change increments it, and a JWT is accepted only
while its `ep` claim equals the current epoch, so changing credentials revokes earlier tokens.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum

import redis
from werkzeug.security import check_password_hash, generate_password_hash

from store.redis_store import Store

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 256
MAX_EMAIL_LENGTH = 254
_EMAIL_SHAPE = re.compile(r"^[^@\s:/\\]+@[^@\s:/\\]+$")
# Compared against when the email is unknown, so a login takes as long for a missing user as
# for a wrong password (no user enumeration by timing).
_DUMMY_HASH = generate_password_hash(secrets.token_urlsafe(16))


class Role(StrEnum):
    ADMIN = "admin"
    VIEWER = "viewer"


class UserError(ValueError):
    """Invalid user input or state. `field` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class User:
    email: str
    role: Role
    created_at: str

    def to_json(self) -> dict[str, str]:
        return {"email": self.email, "role": self.role.value, "created_at": self.created_at}


def normalize_email(raw: object, field: str = "email") -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise UserError(field, f"{field} must be a non-empty string")
    email = raw.strip().lower()
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL_SHAPE.match(email):
        raise UserError(field, f"{field} is not a valid email address")
    return email


def check_new_password(raw: object, field: str = "password") -> str:
    if not isinstance(raw, str):
        raise UserError(field, f"{field} must be a string")
    if not MIN_PASSWORD_LENGTH <= len(raw) <= MAX_PASSWORD_LENGTH:
        raise UserError(field, f"{field} must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")
    return raw


def parse_role(raw: object) -> Role:
    try:
        return Role(str(raw).strip().lower())
    except ValueError:
        raise UserError("role", "role must be admin or viewer") from None


class UserStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    def _user_key(self, email: str) -> str:
        return self._store.key("users", email)

    def _index_key(self) -> str:
        return self._store.key("users", "index")

    def _epoch_key(self, email: str) -> str:
        return self._store.key("auth", "token_epoch", email)

    # --- reads -----------------------------------------------------------------------------
    def get(self, email: str) -> User | None:
        data: dict[str, str] = self._store.redis.hgetall(self._user_key(email))
        if not data or "password_hash" not in data:
            return None
        return User(email=data["email"], role=Role(data["role"]), created_at=data.get("created_at", ""))

    def list(self) -> list[User]:
        users = [self.get(email) for email in sorted(self._store.redis.smembers(self._index_key()))]
        return [u for u in users if u is not None]

    def count_admins(self) -> int:
        return sum(1 for u in self.list() if u.role is Role.ADMIN)

    def token_epoch(self, email: str) -> int:
        raw = self._store.redis.get(self._epoch_key(email))
        return int(raw) if raw is not None else 0

    def authenticate(self, email: object, password: object) -> User | None:
        """The user when email and password match, else None. Constant-time hash comparison,
        and a dummy comparison for unknown emails so timing does not reveal which emails exist."""
        if not isinstance(email, str) or not isinstance(password, str) or len(password) > MAX_PASSWORD_LENGTH:
            check_password_hash(_DUMMY_HASH, "x")
            return None
        key = email.strip().lower()
        stored_hash = self._store.redis.hget(self._user_key(key), "password_hash") if len(key) <= MAX_EMAIL_LENGTH else None
        if stored_hash is None:
            check_password_hash(_DUMMY_HASH, password)
            return None
        if not check_password_hash(stored_hash, password):
            return None
        return self.get(key)

    # --- writes ----------------------------------------------------------------------------
    def add(self, email: str, password: str, role: Role = Role.VIEWER) -> User:
        email = normalize_email(email)
        password = check_new_password(password)
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        fields = {"email": email, "role": Role(role).value, "created_at": created,
                  "password_hash": generate_password_hash(password)}
        key = self._user_key(email)
        # WATCH + MULTI: two concurrent adds of the same email cannot both succeed.
        with self._store.redis.pipeline() as pipe:
            try:
                pipe.watch(key)
                if pipe.exists(key):
                    raise UserError("email", f"user {email} already exists")
                pipe.multi()
                pipe.hset(key, mapping=fields)
                pipe.sadd(self._index_key(), email)
                pipe.execute()
            except redis.WatchError:
                raise UserError("email", f"user {email} already exists") from None
        return User(email, Role(role), created)

    def remove(self, email: str) -> bool:
        email = email.strip().lower()
        user = self.get(email)
        if user is None:
            return False
        if user.role is Role.ADMIN and self.count_admins() <= 1:
            raise UserError("email", "cannot remove the last admin")
        with self._store.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._user_key(email))
            pipe.srem(self._index_key(), email)
            pipe.incr(self._epoch_key(email))  # revoke its tokens even if the email is re-added
            pipe.execute()
        return True

    def set_password(self, email: str, new_password: str, field: str = "password") -> int:
        """Replace the password hash and revoke earlier tokens. Returns the new token epoch."""
        email = email.strip().lower()
        new_password = check_new_password(new_password, field)
        if self.get(email) is None:
            raise UserError("email", f"user {email} does not exist")
        with self._store.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._user_key(email), "password_hash", generate_password_hash(new_password))
            pipe.incr(self._epoch_key(email))
            _, epoch = pipe.execute()
        return int(epoch)

    def change_credentials(self, email: str, new_email: str | None, new_password: str | None) -> User:
        """Change the email and/or password atomically; revokes every token of the old identity."""
        email = email.strip().lower()
        target = normalize_email(new_email, "newEmail") if new_email is not None else email
        if new_password is not None:
            check_new_password(new_password, "newPassword")
        old_key, new_key = self._user_key(email), self._user_key(target)
        with self._store.redis.pipeline() as pipe:
            try:
                pipe.watch(old_key, new_key)
                data: dict[str, str] = pipe.hgetall(old_key)
                if not data:
                    raise UserError("email", "the current user no longer exists")
                if target != email and pipe.exists(new_key):
                    raise UserError("newEmail", f"user {target} already exists")
                data = dict(data, email=target)
                if new_password is not None:
                    data["password_hash"] = generate_password_hash(new_password)
                pipe.multi()
                if target != email:
                    pipe.delete(old_key)
                    pipe.srem(self._index_key(), email)
                    pipe.sadd(self._index_key(), target)
                    pipe.incr(self._epoch_key(target))  # tokens once issued to a removed user of that email
                pipe.hset(new_key, mapping=data)
                pipe.incr(self._epoch_key(email))
                pipe.execute()
            except redis.WatchError:
                raise UserError("email", "the user was changed concurrently; try again") from None
        return User(target, Role(data["role"]), data.get("created_at", ""))


def generate_password() -> str:
    return secrets.token_urlsafe(18)
