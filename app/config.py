"""Every setting the service reads, in one typed place.

Values come from the environment and from `.env`. Nothing else in the code reads `os.environ`;
it asks `get_settings()`, which is read once per process.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from limits import parse_many
from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.llm.models import (
    DEFAULT_MODELS,
    REAL_PROVIDERS,
    CatalogueError,
    ProviderName,
    load_catalogue,
)

MIN_SECRET_BYTES = 32

# How the model providers' SDKs talk HTTP: the SDKs' supported aiohttp client (cheapest per
# chunk) or httpx's own transport. Both honour HTTPS_PROXY / NO_PROXY. See app/llm/sdk.py.
HttpClientKind = Literal["aiohttp", "httpx"]

# Values copied from docs and examples that must never sign production tokens.
_PLACEHOLDER_SECRETS = frozenset(
    {
        "change-me",
        "changeme",
        "change-me-to-a-long-random-string",
        "secret",
        "your-secret-key",
        "your-secret-here",
        "jwt-secret",
        "please-change-me",
        "replace-me",
    }
)


def is_weak_secret(value: str) -> str | None:
    """Why `value` must not sign tokens in production, or None if it is acceptable."""
    lowered = value.strip().lower()
    if not lowered:
        return "JWT_SECRET is empty"
    if lowered in _PLACEHOLDER_SECRETS or any(
        word in lowered for word in ("change-me", "changeme", "placeholder", "example")
    ):
        return "JWT_SECRET is a placeholder value"
    if len(value.encode()) < MIN_SECRET_BYTES:
        return f"JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes"
    if len(set(value)) < 8:
        return "JWT_SECRET has too little variety to be random"
    return None


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(value: str) -> str:
    """`value` as browsers send it in `Origin` (lowercase, no default port), or ValueError."""
    parts = urlsplit(value.strip())
    port = parts.port  # raises ValueError for a malformed port
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{value!r} is not an origin like https://app.example.com")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{value!r} is not an origin: leave out the path")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is not None and port != _DEFAULT_PORTS[parts.scheme.lower()]:
        host = f"{host}:{port}"
    return f"{parts.scheme.lower()}://{host}"


def _check_rate(value: str) -> str:
    """A rate such as "10/minute;100/hour": parsed here so a typo fails at start-up."""
    try:
        windows = parse_many(value)
    except ValueError as error:
        raise ValueError(f"{value!r} is not a rate like '10/minute;100/hour'") from error
    if not 1 <= len(windows) <= 4 or any(window.amount < 1 for window in windows):
        raise ValueError(f"{value!r}: give one to four windows, each allowing at least 1")
    return value


RateSpec = Annotated[str, AfterValidator(_check_rate)]

# The async drivers this service runs on, and the schemes people copy from other tools' docs
# (Supabase, Heroku, psql) that mean the same database.
_ASYNC_SCHEMES = {"postgresql+asyncpg", "sqlite+aiosqlite"}
_COMMON_SCHEMES = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}
_URL_FORMS = "postgresql+asyncpg://user:password@host:5432/db or sqlite+aiosqlite:///./data/app.db"


def async_database_url(value: str) -> str:
    """`value` with the async driver this service uses: `postgresql://`, `postgres://` and
    `sqlite://` are taken to mean asyncpg and aiosqlite; any other driver is refused (by scheme,
    never echoing the URL, which may hold a password)."""
    scheme, separator, rest = value.strip().partition("://")
    scheme = scheme.lower()
    if not separator or not scheme:
        raise ValueError(f"not a database URL; expected {_URL_FORMS}")
    if scheme in _ASYNC_SCHEMES:
        return f"{scheme}://{rest}"
    if scheme in _COMMON_SCHEMES:
        return f"{_COMMON_SCHEMES[scheme]}://{rest}"
    raise ValueError(f"the scheme {scheme!r} is not supported; expected {_URL_FORMS}")


DatabaseUrl = Annotated[str, AfterValidator(async_database_url)]


@dataclass(frozen=True, slots=True)
class ExternalIssuerSettings:
    issuer: str
    audience: str
    jwks_url: str | None
    hs256_secret: SecretStr | None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # --- service ---
    app_env: Literal["development", "production"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["console", "json"] | None = None
    data_dir: Path = Path("./data")
    graphiql_enabled: bool | None = None
    # Where /graphql and /docs load their pinned, integrity-checked scripts from: unset, this
    # service (files shipped in app/web/vendor, no internet needed); else an npm CDN or a mirror
    # with the same /{package}@{version}/{file} layout, e.g. https://unpkg.com.
    assets_cdn_url: str | None = Field(default=None, pattern=r"^https?://[^\s\"'<>]+$")
    introspection_enabled: bool | None = None
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    graphql_max_depth: int = Field(default=10, ge=2, le=50)
    graphql_max_aliases: int = Field(default=30, ge=1, le=1000)
    graphql_max_tokens: int = Field(default=1000, ge=50, le=100_000)
    # As large as MAX_REQUEST_BODY_BYTES: a 100,000-character message (emoji, escaped) is ~1.2 MB.
    ws_max_message_bytes: int = Field(default=1536 * 1024, ge=4 * 1024, le=16 * 1024 * 1024)
    ws_compression: bool = False
    ws_init_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    ws_max_subscriptions: int = Field(default=10, ge=1, le=1000)
    shutdown_grace_seconds: float = Field(default=10.0, ge=1, le=300)
    # Where `python -m app` (and so `make run`) listens; --host / --port override them.
    host: str = Field(default="127.0.0.1", min_length=1, max_length=253)
    port: int = Field(default=8000, ge=1, le=65535)

    # --- database ---
    # postgresql:// (or postgres://) and sqlite:// are accepted too, as asyncpg and aiosqlite.
    database_url: DatabaseUrl = "sqlite+aiosqlite:///./data/conversations.db"
    # Alembic connects with this URL (a role that owns the tables); the app with DATABASE_URL.
    migration_database_url: DatabaseUrl | None = None
    database_app_role: str = Field(default="conversation_app", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    database_pool_size: int = Field(default=10, ge=1, le=200)
    database_max_overflow: int = Field(default=10, ge=0, le=200)
    database_echo: bool = False

    # --- auth ---
    jwt_secret: SecretStr | None = None
    jwt_issuer: str = "conversation-api"
    jwt_audience: str = "conversation-api"
    access_token_expire_minutes: int = Field(default=30, ge=1, le=60 * 24 * 30)
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)

    # --- model providers ---
    # The provider of conversations whose model names none; every configured provider is usable.
    llm_provider: ProviderName | None = None
    groq_api_key: SecretStr | None = None
    groq_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    # TOML file adding models to the built-in catalogue or overriding their fields.
    models_file: Path | None = None
    # None: on, except in production when a real provider is configured.
    echo_enabled: bool | None = None
    default_model: str | None = None
    llm_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    llm_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    llm_max_retries: int = Field(default=2, ge=0, le=10)
    llm_retry_max_wait_seconds: float = Field(default=10.0, ge=0, le=120)
    llm_max_connections: int = Field(default=1000, ge=1, le=100_000)
    llm_http_client: HttpClientKind = "aiohttp"
    echo_token_delay_seconds: float = Field(default=0.02, ge=0, le=5)

    # --- streaming ---
    stream_checkpoint_seconds: float = Field(default=2.0, gt=0, le=60)
    stream_keepalive_seconds: float = Field(default=15.0, gt=0, le=15)
    stream_coalesce_ms: float = Field(default=30.0, ge=0, le=1000)
    stream_max_seconds: float = Field(default=600.0, gt=0, le=3600)
    stream_max_output_chars: int = Field(default=400_000, ge=1_000, le=10_000_000)

    # --- quotas ---
    user_daily_token_budget: int | None = Field(default=None, ge=1)

    # --- abuse limits (app/ratelimit; rates in the `limits` notation: "10/minute;100/hour") ---
    rate_limit_enabled: bool = True
    login_rate_limit_per_ip: RateSpec = "30/minute;300/hour"
    login_rate_limit_per_email: RateSpec = "10/minute;50/hour"
    register_rate_limit_per_ip: RateSpec = "10/minute;50/hour"
    register_rate_limit_per_email: RateSpec = "5/minute;20/hour"
    reply_rate_limit_per_user: RateSpec = "30/minute;600/hour"
    user_max_concurrent_streams: int = Field(default=4, ge=1, le=1000)
    # Clients are told apart by the socket's peer address; behind N reverse proxies that each
    # append to X-Forwarded-For, set this to N (never more: the extra entries are client-made).
    trusted_proxy_hops: int = Field(default=0, ge=0, le=10)
    # 100,000 characters of content take up to 1.2 MB of JSON (12 bytes for each astral
    # character escaped as a surrogate pair); 1.5 MiB leaves room for the rest of the request.
    max_request_body_bytes: int = Field(default=1536 * 1024, ge=64 * 1024, le=64 * 1024 * 1024)

    # --- accounts and identity (app/auth; docs/security.md, README "Using Supabase Auth") ---
    # Writes a user may make: conversations created, changed, deleted; API keys created. Each
    # aliased mutation in one GraphQL document counts as one write.
    write_rate_limit_per_user: RateSpec = "60/minute;1000/hour"
    user_max_conversations: int = Field(default=10_000, ge=1, le=10_000_000)
    # An external OIDC issuer whose access tokens are accepted beside ours.
    auth_jwks_url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")
    auth_issuer: str | None = Field(default=None, min_length=1, max_length=512)
    auth_audience: str | None = Field(default=None, min_length=1, max_length=512)
    # Supabase: SUPABASE_URL alone means its JWKS, issuer and audience; SUPABASE_JWT_SECRET adds
    # the legacy shared HS256 secret (projects not yet on asymmetric signing keys).
    supabase_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    supabase_jwt_secret: SecretStr | None = None
    # Longest wait for the issuer's JWKS; how often it may be fetched again for a `kid` it did
    # not have, and how long a failed fetch is not retried (app/auth/jwks.py).
    auth_jwks_timeout_seconds: float = Field(default=3.0, gt=0, le=30)
    auth_jwks_min_refresh_seconds: float = Field(default=60.0, ge=1, le=3600)
    # Link the first external sign-in to a local account with the same email, when the issuer
    # says in a top-level `email_verified: true` claim that the address is verified.
    auth_link_verified_email: bool = False

    # --- shared state ---
    redis_url: str | None = None
    # Every Redis key starts with this, so deployments (and test runs) can share one server.
    redis_key_prefix: str = Field(default="cvapi", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    # Connect and command timeout: a Redis that hangs must not hang requests.
    redis_timeout_seconds: float = Field(default=0.25, ge=0.01, le=5)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _parse_origins(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("cors_origins")
    @classmethod
    def _no_wildcard_origin(cls, value: list[str]) -> list[str]:
        if "*" in value:
            raise ValueError("CORS_ORIGINS cannot be '*': list the browser origins you trust")
        # Browsers send origins normalised; CORS and the websocket check compare exact strings.
        return [normalize_origin(origin) for origin in value]

    @field_validator(
        "jwt_secret",
        "groq_api_key",
        "openai_api_key",
        "anthropic_api_key",
        "groq_base_url",
        "openai_base_url",
        "anthropic_base_url",
        "models_file",
        "supabase_jwt_secret",
        "assets_cdn_url",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `JWT_SECRET=` in a .env file means "not set", never "sign with an empty key".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("models_file")
    @classmethod
    def _valid_models_file(cls, value: Path | None) -> Path | None:
        # Read now, so a broken file stops the start-up with its name, model and field.
        try:
            load_catalogue(value)
        except CatalogueError as error:
            raise ValueError(str(error)) from None
        return value

    @model_validator(mode="after")
    def _production_guards(self) -> Settings:
        secret = self.jwt_secret.get_secret_value() if self.jwt_secret is not None else None
        if self.app_env == "production":
            if secret is None:
                raise ValueError("JWT_SECRET is required when APP_ENV=production")
            reason = is_weak_secret(secret)
            if reason:
                raise ValueError(f"{reason} (APP_ENV=production refuses weak secrets)")
        elif secret is not None and len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
        self._check_external_issuer()
        return self

    @model_validator(mode="after")
    def _providers_can_serve(self) -> Settings:
        provider = self.resolved_llm_provider
        if provider != "echo" and provider not in self.configured_providers:
            needs = {
                "groq": "GROQ_API_KEY",
                "openai": "OPENAI_API_KEY or OPENAI_BASE_URL",
                "anthropic": "ANTHROPIC_API_KEY or ANTHROPIC_BASE_URL",
            }
            raise ValueError(f"LLM_PROVIDER={provider} needs {needs[provider]}")
        if provider == "echo" and self.echo_enabled is False:
            raise ValueError("LLM_PROVIDER=echo contradicts ECHO_ENABLED=false")
        default_model = load_catalogue(self.models_file).find(self.resolved_default_model)
        if default_model is None:
            raise ValueError(f"DEFAULT_MODEL {self.resolved_default_model} is not in the catalogue")
        offered = default_model.provider in self.configured_providers or (
            default_model.provider == "echo" and self.resolved_echo_enabled
        )
        if not offered:
            raise ValueError(
                f"DEFAULT_MODEL {default_model.id} is a {default_model.provider} model, and that "
                "provider is not configured"
            )
        return self

    def _check_external_issuer(self) -> None:
        issuer = self.external_issuer
        if issuer is None:
            if self.auth_jwks_url or self.auth_issuer or self.auth_audience:
                raise ValueError(
                    "AUTH_JWKS_URL, AUTH_ISSUER and AUTH_AUDIENCE go together (or set SUPABASE_URL)"
                )
            if self.supabase_jwt_secret is not None:
                raise ValueError("SUPABASE_JWT_SECRET needs SUPABASE_URL (or AUTH_ISSUER)")
            return
        if issuer.issuer == self.jwt_issuer:
            raise ValueError("AUTH_ISSUER must differ from JWT_ISSUER (our own tokens' issuer)")
        secret = issuer.hs256_secret
        if secret is not None and len(secret.get_secret_value().encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"SUPABASE_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
        if self.is_production and issuer.jwks_url and not issuer.jwks_url.startswith("https://"):
            raise ValueError("AUTH_JWKS_URL must be https:// when APP_ENV=production")

    @property
    def external_issuer(self) -> ExternalIssuerSettings | None:
        """The external issuer whose tokens are accepted, from AUTH_* and SUPABASE_* (AUTH_*
        win where both are set), or None when none is configured completely."""
        base = self.supabase_url.rstrip("/") if self.supabase_url else None
        jwks_url = self.auth_jwks_url or (f"{base}/auth/v1/.well-known/jwks.json" if base else None)
        issuer = self.auth_issuer or (f"{base}/auth/v1" if base else None)
        audience = self.auth_audience or ("authenticated" if base else None)
        secret = self.supabase_jwt_secret
        if issuer is None or audience is None or (jwks_url is None and secret is None):
            return None
        return ExternalIssuerSettings(
            issuer=issuer, audience=audience, jwks_url=jwks_url, hs256_secret=secret
        )

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    @property
    def stale_reply_after(self) -> timedelta:
        """A reply in progress with no checkpoint for this long was left by a dead process."""
        return timedelta(seconds=self.stream_checkpoint_seconds * 3)

    @property
    def configured_providers(self) -> tuple[ProviderName, ...]:
        """The real providers with credentials or an endpoint, in order of preference."""
        configured = {
            "groq": self.groq_api_key is not None,
            # An OpenAI-compatible server (Ollama, vLLM, ...) may need no key at all.
            "openai": self.openai_api_key is not None or self.openai_base_url is not None,
            "anthropic": self.anthropic_api_key is not None or self.anthropic_base_url is not None,
        }
        return tuple(name for name in REAL_PROVIDERS if configured[name])

    @property
    def resolved_llm_provider(self) -> ProviderName:
        if self.llm_provider is not None:
            return self.llm_provider
        configured = self.configured_providers
        return configured[0] if configured else "echo"

    @property
    def resolved_echo_enabled(self) -> bool:
        if self.echo_enabled is not None:
            return self.echo_enabled
        if self.resolved_llm_provider == "echo":
            return True
        # A production server with a real model does not offer a fake one unless asked to.
        return not (self.is_production and self.configured_providers)

    @property
    def resolved_default_model(self) -> str:
        if self.default_model:
            return self.default_model
        return DEFAULT_MODELS[self.resolved_llm_provider]

    @property
    def resolved_graphiql(self) -> bool:
        return (
            self.graphiql_enabled if self.graphiql_enabled is not None else not self.is_production
        )

    @property
    def resolved_introspection(self) -> bool:
        if self.introspection_enabled is not None:
            return self.introspection_enabled
        return not self.is_production

    @property
    def resolved_log_format(self) -> Literal["console", "json"]:
        if self.log_format is not None:
            return self.log_format
        return "json" if self.is_production else "console"

    @property
    def alembic_url(self) -> str:
        return self.migration_database_url or self.database_url


class ConfigurationError(RuntimeError):
    """Settings that cannot run. The message names the variables, never their values."""


def describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        name = ".".join(str(part) for part in item["loc"]).upper() or "settings"
        problems.append(f"{name}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


@cache
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        # `from None`: pydantic's own message would echo the inputs (URLs with passwords).
        raise ConfigurationError(f"invalid configuration: {describe(error)}") from None
