"""A loopback identity provider that mints access tokens the way Supabase Auth does.

A real HTTP server (Starlette on uvicorn, in the test's event loop) publishes its JWKS where
Supabase publishes a project's, `{base_url}/auth/v1/.well-known/jwks.json`, so the API can be
pointed at it with `SUPABASE_URL=base_url` alone. Keys are generated per run (RSA, EC P-256,
Ed25519); the test decides which are published and which one signs, and rotates them mid-test.

    async with FakeIssuer() as issuer:
        issuer.rotate("EC")                      # publish a new key and sign with it
        token = issuer.mint(sub=..., email=...)  # Supabase's claim set, signed with that key
        issuer.mode = "error"                    # the JWKS answers 503; "hang": never answers

`jwks_requests` counts the JWKS requests received; `holding` is how many are being held right
now (mode "hang"), and `held` is set when one arrives.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

KeyKind = Literal["RSA", "EC", "Ed25519"]
Mode = Literal["ok", "error", "hang"]
JWKS_PATH = "/auth/v1/.well-known/jwks.json"
_ALGORITHMS: dict[KeyKind, str] = {"RSA": "RS256", "EC": "ES256", "Ed25519": "EdDSA"}


def b64url(data: bytes | dict[str, Any]) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class SigningKey:
    kid: str
    kind: KeyKind
    private: Any

    @classmethod
    def generate(cls, kind: KeyKind) -> SigningKey:
        private: Any
        if kind == "RSA":
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif kind == "EC":
            private = ec.generate_private_key(ec.SECP256R1())
        else:
            private = ed25519.Ed25519PrivateKey.generate()
        return cls(kid=f"{kind.lower()}-{uuid.uuid4().hex[:12]}", kind=kind, private=private)

    @property
    def algorithm(self) -> str:
        return _ALGORITHMS[self.kind]

    @property
    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def public_jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        return {**jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def sign(self, claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        return jwt.encode(
            claims,
            self.private,
            algorithm=self.algorithm,
            headers={"kid": self.kid, "typ": "JWT", **(headers or {})},
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class FakeIssuer:
    def __init__(
        self,
        *,
        kind: KeyKind = "RSA",
        cache_control: str | None = "public, max-age=600",
        hs256_secret: str | None = None,
    ) -> None:
        self.cache_control = cache_control
        self.hs256_secret = hs256_secret  # the legacy shared secret (SUPABASE_JWT_SECRET)
        self.mode: Mode = "ok"
        self.jwks_requests = 0
        self.holding = 0
        self.held = asyncio.Event()
        self._release = asyncio.Event()
        self.signing = SigningKey.generate(kind)
        self.published: list[SigningKey] = [self.signing]
        self._port = _free_port()
        self.base_url = f"http://127.0.0.1:{self._port}"
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/auth/v1"

    @property
    def jwks_url(self) -> str:
        return self.base_url + JWKS_PATH

    # --- keys -------------------------------------------------------------------------------

    def rotate(self, kind: KeyKind) -> SigningKey:
        """Publish a new key and sign with it from now on; the old ones stay published."""
        self.signing = SigningKey.generate(kind)
        self.published.append(self.signing)
        return self.signing

    def publish(self, kind: KeyKind) -> SigningKey:
        """Publish a new key without signing with it yet (a standby key)."""
        key = SigningKey.generate(kind)
        self.published.append(key)
        return key

    def retire(self, key: SigningKey) -> None:
        self.published.remove(key)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.public_jwk() for key in self.published]}

    # --- tokens -----------------------------------------------------------------------------

    def claims(
        self, *, sub: str | None = None, email: str | None = None, **changes: Any
    ) -> dict[str, Any]:
        """Supabase Auth's access-token claims; `changes` override (None removes a claim)."""
        now = int(time.time())
        sub = sub or str(uuid.uuid4())
        email = email if email is not None else f"{sub[:8]}@supabase.example"
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": "authenticated",
            "exp": now + 3600,
            "iat": now,
            "email": email,
            "phone": "",
            "app_metadata": {"provider": "email", "providers": ["email"]},
            "user_metadata": {
                "email": email,
                "email_verified": True,
                "phone_verified": False,
                "sub": sub,
            },
            "role": "authenticated",
            "aal": "aal1",
            "amr": [{"method": "password", "timestamp": now}],
            "session_id": str(uuid.uuid4()),
            "is_anonymous": False,
        }
        for name, value in changes.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def mint(
        self,
        *,
        key: SigningKey | None = None,
        headers: dict[str, Any] | None = None,
        sub: str | None = None,
        email: str | None = None,
        **changes: Any,
    ) -> str:
        return (key or self.signing).sign(self.claims(sub=sub, email=email, **changes), headers)

    def mint_hs256(
        self, secret: bytes | str, *, header: dict[str, Any] | None = None, **claims: Any
    ) -> str:
        """HS256 over any bytes as the secret: also a public key's PEM, which PyJWT itself
        refuses to use as an HMAC secret (the algorithm-confusion attack)."""
        head = b64url(header or {"alg": "HS256", "typ": "JWT"})
        body = b64url(self.claims(**claims))
        key = secret.encode() if isinstance(secret, str) else secret
        signature = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{b64url(signature)}"

    # --- the server -------------------------------------------------------------------------

    def reset(self) -> None:
        self.mode = "ok"
        self._release.set()
        self._release = asyncio.Event()
        self.held = asyncio.Event()

    async def _jwks(self, request: Request) -> Response:
        self.jwks_requests += 1
        if self.mode == "hang":
            self.holding += 1
            self.held.set()
            release = self._release
            try:
                await release.wait()
            finally:
                self.holding -= 1
        if self.mode == "error":
            return JSONResponse({"message": "unavailable"}, status_code=503)
        headers = {"Cache-Control": self.cache_control} if self.cache_control else {}
        return JSONResponse(self.jwks(), headers=headers)

    async def __aenter__(self) -> FakeIssuer:
        app = Starlette(routes=[Route(JWKS_PATH, self._jwks)])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self._port, log_config=None, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *_: object) -> None:
        self._release.set()
        assert self._server is not None
        assert self._task is not None
        self._server.should_exit = True
        await asyncio.wait_for(self._task, timeout=10)
