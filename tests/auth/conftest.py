"""The auth tests use the API test fixtures (app on real Redis and fakeredis, logged-in headers)."""
from tests.api.conftest import admin_headers, app, client, viewer_headers  # noqa: F401
