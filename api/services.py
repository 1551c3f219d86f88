"""The API's way to the service container (`engine/services.py`) the Flask app carries in
`app.extensions["services"]`: views call `get_services()`. The container itself lives below the
API so that nothing else needs Flask to read it."""
from __future__ import annotations

from typing import cast

from flask import current_app

from engine.services import Services

__all__ = ["Services", "get_services"]


def get_services() -> Services:
    return cast(Services, current_app.extensions["services"])
