"""UserStore (hashing, epochs, atomic changes), first-admin bootstrap and the `flask users` CLI."""
from __future__ import annotations

import pytest
from flask import Flask

from auth.bootstrap import GENERATED_ADMIN_EMAIL, ensure_first_admin
from auth.users import Role, UserError, UserStore
from config.settings import Settings
from store.redis_store import Store
from tests.api.helpers import snapshot


def test_password_stored_only_as_salted_hash(store: Store) -> None:
    users = UserStore(store)
    users.add("a@example.com", "same password", Role.VIEWER)
    users.add("b@example.com", "same password", Role.VIEWER)
    hash_a = store.redis.hget(store.key("users", "a@example.com"), "password_hash")
    hash_b = store.redis.hget(store.key("users", "b@example.com"), "password_hash")
    assert "same password" not in hash_a and hash_a != hash_b  # salted
    dumped = str(snapshot(store))
    assert "same password" not in dumped
    assert users.authenticate("A@example.com", "same password") is not None
    assert users.authenticate("a@example.com", "wrong") is None
    assert users.authenticate("zz@example.com", "same password") is None


def test_duplicate_and_invalid_users(store: Store) -> None:
    users = UserStore(store)
    users.add("a@example.com", "long enough", Role.ADMIN)
    with pytest.raises(UserError, match="already exists"):
        users.add("A@example.com", "long enough")
    with pytest.raises(UserError):
        users.add("not an email", "long enough")
    with pytest.raises(UserError):
        users.add("b@example.com", "short")


def test_set_password_bumps_epoch_and_last_admin_protected(store: Store) -> None:
    users = UserStore(store)
    users.add("a@example.com", "long enough", Role.ADMIN)
    assert users.token_epoch("a@example.com") == 0
    assert users.set_password("a@example.com", "another long one") == 1
    assert users.token_epoch("a@example.com") == 1
    with pytest.raises(UserError, match="last admin"):
        users.remove("a@example.com")
    assert users.remove("nobody@example.com") is False


def test_bootstrap_from_settings_does_not_overwrite(settings: Settings, store: Store) -> None:
    users = UserStore(store)
    assert ensure_first_admin(users, settings, allow_generated=True) is None
    assert users.get("admin@example.com").role is Role.ADMIN  # type: ignore[union-attr]
    users.set_password("admin@example.com", "changed via the api")
    ensure_first_admin(users, settings, allow_generated=True)
    assert users.authenticate("admin@example.com", "changed via the api") is not None


def test_bootstrap_generates_in_paper_mode_once(settings: Settings, store: Store) -> None:
    users = UserStore(store)
    bare = settings.with_overrides(admin_email=None, admin_password=None)
    assert ensure_first_admin(users, bare, allow_generated=False) is None
    generated = ensure_first_admin(users, bare, allow_generated=True)
    assert generated is not None and generated.email == GENERATED_ADMIN_EMAIL and len(generated.password) >= 16
    assert users.authenticate(GENERATED_ADMIN_EMAIL, generated.password) is not None
    assert ensure_first_admin(users, bare, allow_generated=True) is None  # only once


def test_cli_add_list_reset_remove(app: Flask, store: Store) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["users", "add", "ops@example.com", "--role", "viewer", "--password", "ops password"])
    assert result.exit_code == 0, result.output
    assert "added ops@example.com (viewer)" in result.output
    listed = runner.invoke(args=["users", "list"])
    assert "admin@example.com\tadmin" in listed.output and "ops@example.com\tviewer" in listed.output
    users: UserStore = app.extensions["services"].users
    result = runner.invoke(args=["users", "reset-password", "ops@example.com", "--password", "new ops password"])
    assert result.exit_code == 0 and users.token_epoch("ops@example.com") == 1
    assert users.authenticate("ops@example.com", "new ops password") is not None
    result = runner.invoke(args=["users", "add", "ops@example.com", "--password", "whatever123"])
    assert result.exit_code != 0 and "already exists" in result.output
    result = runner.invoke(args=["users", "remove", "ops@example.com"])
    assert result.exit_code == 0 and users.get("ops@example.com") is None
    result = runner.invoke(args=["users", "remove", "admin@example.com"])
    assert result.exit_code != 0 and "last admin" in result.output
    result = runner.invoke(args=["users", "remove", "ghost@example.com"])
    assert result.exit_code != 0
