"""`flask --app app users add|list|remove|reset-password`."""
from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from auth.users import Role, UserError, UserStore, parse_role

users_cli = AppGroup("users", help="Manage dashboard users (stored in Redis).")


def _users() -> UserStore:
    return current_app.extensions["services"].users  # type: ignore[no-any-return]


@users_cli.command("add")
@click.argument("email")
@click.option("--role", default=Role.VIEWER.value, show_default=True, type=click.Choice([r.value for r in Role]))
@click.password_option("--password", help="Prompted (hidden, confirmed) when omitted.")
def add_user(email: str, role: str, password: str) -> None:
    """Add a user."""
    try:
        user = _users().add(email, password, parse_role(role))
    except UserError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"added {user.email} ({user.role.value})")


@users_cli.command("list")
def list_users() -> None:
    """List users and their roles."""
    for user in _users().list():
        click.echo(f"{user.email}\t{user.role.value}\t{user.created_at}")


@users_cli.command("remove")
@click.argument("email")
def remove_user(email: str) -> None:
    """Remove a user (its tokens stop working at once)."""
    try:
        removed = _users().remove(email)
    except UserError as exc:
        raise click.ClickException(exc.message) from None
    if not removed:
        raise click.ClickException(f"no user {email.strip().lower()}")
    click.echo(f"removed {email.strip().lower()}")


@users_cli.command("reset-password")
@click.argument("email")
@click.password_option("--password", help="Prompted (hidden, confirmed) when omitted.")
def reset_password(email: str, password: str) -> None:
    """Set a new password (earlier tokens of the user are revoked)."""
    try:
        _users().set_password(email, password)
    except UserError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"password reset for {email.strip().lower()}; earlier tokens revoked")
