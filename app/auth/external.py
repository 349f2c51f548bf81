"""Access tokens of an external issuer (Supabase Auth, Auth0, Clerk, Keycloak, Cognito, ...).

A token is checked the way the well-kept libraries check one (PyJWT does the cryptography):

- its signing key is looked up by the header's `kid` (required) in the issuer's JWKS
  (`app.auth.jwks`), and the algorithm is the key's, never the header's choice: a header naming
  another algorithm than its key's is refused, so an HS256 token can never be checked against a
  public key, and `alg: none` matches no key;
- headers that carry or point to keys (`jwk`, `jku`, `x5u`, `x5c`) and unknown `crit`
  extensions are refused: keys come from the configured JWKS only;
- `exp`, `iss`, `aud` and `sub` are required; `exp`, `nbf` and `iat` are checked with
  LEEWAY_SECONDS for clock skew; `iss` must equal AUTH_ISSUER, `aud` contain AUTH_AUDIENCE.

With SUPABASE_JWT_SECRET, tokens whose header says HS256 are checked against that shared secret
(and only HS256 ones: a secret is never used for another algorithm, a public key never for HS256).
Every refusal is the same `Unauthenticated`, whatever the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt
import structlog
from jwt import PyJWK

from app.auth.emails import canonical_email
from app.auth.jwks import JwksCache
from app.auth.security import INVALID_TOKEN, MAX_TOKEN_LENGTH
from app.config import Settings
from app.errors import Unauthenticated

logger = structlog.get_logger(__name__)

LEEWAY_SECONDS = 30
MAX_SUBJECT_LENGTH = 255
_KEY_BEARING_HEADERS = frozenset({"jwk", "jku", "x5u", "x5c"})
_REQUIRED = ["exp", "iss", "aud", "sub"]


@dataclass(frozen=True, slots=True)
class ExternalIdentity:
    """Who a valid external token says the caller is."""

    issuer: str
    subject: str
    email: str | None  # normalised; None when absent or not an acceptable address
    email_verified: bool  # the issuer's top-level `email_verified` claim is `true`


class ExternalIssuer:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks: JwksCache | None,
        hs256_secret: str | None,
    ) -> None:
        self.issuer = issuer
        self._audience = audience
        self._jwks = jwks
        self._secret = hs256_secret

    @classmethod
    def from_settings(cls, settings: Settings) -> ExternalIssuer | None:
        configured = settings.external_issuer
        if configured is None:
            return None
        jwks = None
        if configured.jwks_url is not None:
            jwks = JwksCache(
                configured.jwks_url,
                timeout=settings.auth_jwks_timeout_seconds,
                min_refresh=settings.auth_jwks_min_refresh_seconds,
            )
        secret = configured.hs256_secret
        return cls(
            issuer=configured.issuer,
            audience=configured.audience,
            jwks=jwks,
            hs256_secret=secret.get_secret_value() if secret is not None else None,
        )

    async def verify(self, token: str) -> ExternalIdentity:
        try:
            return _identity(await self._claims(token))
        except (jwt.PyJWTError, ValueError, TypeError) as error:
            logger.debug("external_token_refused", reason=type(error).__name__)
            raise Unauthenticated(INVALID_TOKEN) from error

    async def _claims(self, token: str) -> dict[str, Any]:
        if len(token) > MAX_TOKEN_LENGTH:
            raise ValueError("token too long")
        header = jwt.get_unverified_header(token)
        if _KEY_BEARING_HEADERS & set(header):
            raise ValueError("keys come from the JWKS only")
        key: PyJWK | str
        if header.get("alg") == "HS256" and self._secret is not None:
            key, algorithm = self._secret, "HS256"
        else:
            key = await self._public_key(header.get("kid"))
            algorithm = key.algorithm_name
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=self._audience,
            issuer=self.issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": _REQUIRED},
        )
        return claims

    async def _public_key(self, kid: object) -> PyJWK:
        if self._jwks is None:
            raise ValueError("no JWKS configured")
        if not isinstance(kid, str) or not 1 <= len(kid) <= 256:
            raise ValueError("kid missing")
        key = await self._jwks.key(kid)
        if key is None:
            raise ValueError("unknown kid")
        return key


def _identity(claims: dict[str, Any]) -> ExternalIdentity:
    subject = claims["sub"]
    if not isinstance(subject, str) or not 1 <= len(subject) <= MAX_SUBJECT_LENGTH:
        raise ValueError("sub must be a string of 1 to 255 characters")
    if "\x00" in subject:
        raise ValueError("sub must not contain NUL")
    email = claims.get("email")
    return ExternalIdentity(
        issuer=claims["iss"],
        subject=subject,
        email=canonical_email(email) if isinstance(email, str) else None,
        email_verified=claims.get("email_verified") is True,
    )
