"""Tastytrade's token endpoint (POST /oauth/token, refresh-token grant) with state: which refresh
tokens are valid, and whether it rotates them. Install it on a `FakeTastytrade` with
`fake.on("POST", "/oauth/token", endpoint)`.

Sources, per behaviour:
- The request: the SDK's `Session.refresh` (tastytrade/session.py) posts JSON `grant_type`,
  `client_secret`, `refresh_token`, without the Authorization header; developer.tastytrade.com
  ("get started": "Mint a 15-minute access token") documents the same fields, `client_id` optional.
- The answer: `access_token`, `token_type`, `expires_in` (900 s); the SDK reads `access_token` and
  `expires_in`.
- Rotation (`rotate=True`): RFC 6749 §6, "The authorization server MAY issue a new refresh token,
  in which case the client MUST discard the old refresh token and replace it with the new refresh
  token. The authorization server MAY revoke the old refresh token after issuing a new refresh
  token": the answer carries `refresh_token`, and the token just used stops working. Tastytrade
  does not document rotation (its refresh tokens "never expire", tastytrade SDK docs, Sessions);
  `rotate=False` is that behaviour.
- A refusal (unknown, revoked or another client's token): `shape="tastytrade"` answers 401 with
  the API's error envelope `{"error": {"code", "message"}}` (developer.tastytrade.com/reference/errors,
  the shape the SDK's `validate_response` parses); `shape="rfc6749"` answers 400 with RFC 6749 §5.2's
  `{"error": "invalid_grant", "error_description": ...}`. Which one Tastytrade sends for a bad grant
  is not documented, so the adapter is tested against both.
"""
from __future__ import annotations

import json
import threading
from typing import Literal

import httpx2

Shape = Literal["tastytrade", "rfc6749"]


class TokenEndpoint:
    def __init__(self, client_secret: str, valid: set[str], *, rotate: bool = False,
                 shape: Shape = "tastytrade") -> None:
        self.client_secret = client_secret
        self.valid = set(valid)
        self.rotate = rotate
        self.shape = shape
        self.used: list[str] = []  # the refresh token of every refresh request, in order
        self.issued = 0
        self._lock = threading.Lock()

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        if body.get("grant_type") != "refresh_token":
            return self._refuse("unsupported_grant_type", "only the refresh_token grant is served here")
        if body.get("client_secret") != self.client_secret:
            return self._refuse("invalid_client", "Client authentication failed")
        token = str(body.get("refresh_token"))
        with self._lock:
            self.used.append(token)
            if token not in self.valid:
                return self._refuse("invalid_grant", "Grant revoked or not issued to this client")
            self.issued += 1
            reply: dict[str, object] = {"access_token": f"atoken-minted-{self.issued:03d}-kk4",
                                        "token_type": "Bearer", "expires_in": 900}
            if self.rotate:
                rotated = f"rtoken-rotated-{self.issued:03d}-p9x2w"
                self.valid.discard(token)
                self.valid.add(rotated)
                reply["refresh_token"] = rotated
        return httpx2.Response(200, json=reply)

    def _refuse(self, code: str, message: str) -> httpx2.Response:
        if self.shape == "rfc6749":
            return httpx2.Response(400, json={"error": code, "error_description": message})
        return httpx2.Response(401, json={"error": {"code": code, "message": message}})
