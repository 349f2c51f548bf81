"""Configuration: production refuses to start with weak secrets, and says why without leaking."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.auth.security import load_signing_secret
from app.config import Settings

STRONG = "k3P9-vQz7-LmX2-aT8w-Rb5n-Yc1d-Hs6j-Fg4e"


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        (None, "JWT_SECRET is required"),
        ("", "JWT_SECRET is required"),
        ("   ", "JWT_SECRET is required"),
        ("change-me", "placeholder"),
        ("change-me-to-a-long-random-string-0123456789", "placeholder"),
        ("short-but-random-9f8e", "at least 32 bytes"),
        ("a" * 64, "variety"),
    ],
)
def test_production_refuses_weak_jwt_secrets(secret: str | None, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        Settings(_env_file=None, app_env="production", jwt_secret=secret)  # type: ignore[call-arg]


def test_production_with_a_strong_secret_turns_the_playground_off() -> None:
    settings = Settings(_env_file=None, app_env="production", jwt_secret=STRONG)  # type: ignore[call-arg]
    assert settings.resolved_graphiql is False
    assert settings.resolved_introspection is False
    assert settings.resolved_log_format == "json"
    development = Settings(_env_file=None)  # type: ignore[call-arg]
    assert development.resolved_graphiql and development.resolved_introspection
    assert development.resolved_llm_provider == "echo"
    assert development.resolved_default_model == "echo"


def test_the_server_refuses_to_start_and_names_the_problem_not_the_values(tmp_path: object) -> None:
    env = {
        **os.environ,
        "APP_ENV": "production",
        "JWT_SECRET": "change-me",
        "DATABASE_URL": "postgresql+asyncpg://app:hunter2-db-password@127.0.0.1:1/db",
        "GROQ_API_KEY": "gsk_do_not_print_me",
    }
    result = subprocess.run(
        [sys.executable, "-m", "app", "--port", "1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tmp_path),
        timeout=60,
    )
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "JWT_SECRET" in output and "placeholder" in output
    for secret in ("hunter2-db-password", "gsk_do_not_print_me", "change-me"):
        assert secret not in output
    assert "Traceback" not in output


def test_every_environment_refuses_a_short_secret_and_treats_blank_as_unset(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        Settings(_env_file=None, jwt_secret="short")  # type: ignore[call-arg]
    blank = Settings(_env_file=None, jwt_secret="", data_dir=tmp_path)  # type: ignore[call-arg]
    assert blank.jwt_secret is None
    generated = load_signing_secret(blank)
    assert len(generated) >= 32
    assert load_signing_secret(blank) == generated  # generated once, then kept
    assert (tmp_path / ".jwt_secret").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [".jwt_secret"]  # no temporary left behind


def test_cors_origins_are_a_comma_separated_list_without_wildcards() -> None:
    settings = Settings(_env_file=None, cors_origins="https://a.example, https://b.example")  # type: ignore[call-arg]
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    with pytest.raises(ValidationError, match="CORS_ORIGINS"):
        Settings(_env_file=None, cors_origins="*")  # type: ignore[call-arg]


def test_env_example_lists_every_setting() -> None:
    from pathlib import Path

    example = (Path(__file__).resolve().parent.parent / ".env.example").read_text()
    listed = {
        line.lstrip("#").split("=", 1)[0].strip()
        for line in example.splitlines()
        if "=" in line and line.lstrip("#").split("=", 1)[0].strip().isupper()
    }
    expected = {name.upper() for name in Settings.model_fields}
    assert expected - listed == set(), "add these to .env.example"
    assert listed - expected == set(), "these are not settings"


def test_supabase_url_alone_configures_jwks_issuer_and_audience() -> None:
    settings = Settings(_env_file=None, supabase_url="https://abc.supabase.co/")  # type: ignore[call-arg]
    issuer = settings.external_issuer
    assert issuer is not None
    assert issuer.jwks_url == "https://abc.supabase.co/auth/v1/.well-known/jwks.json"
    assert issuer.issuer == "https://abc.supabase.co/auth/v1"
    assert issuer.audience == "authenticated"
    assert issuer.hs256_secret is None
    legacy = Settings(
        _env_file=None,  # type: ignore[call-arg]
        supabase_url="https://abc.supabase.co",
        supabase_jwt_secret="super-secret-jwt-token-with-at-least-32-characters-long",
        auth_audience="my-api",
    )
    assert legacy.external_issuer is not None
    assert legacy.external_issuer.audience == "my-api"  # AUTH_* win over the shortcut
    assert legacy.external_issuer.hs256_secret is not None
    assert Settings(_env_file=None).external_issuer is None  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"auth_jwks_url": "https://idp.example/jwks"}, "go together"),
        ({"auth_issuer": "https://idp.example/", "auth_audience": "api"}, "go together"),
        ({"supabase_jwt_secret": "x" * 40}, "SUPABASE_JWT_SECRET needs SUPABASE_URL"),
        ({"supabase_url": "https://a.supabase.co", "supabase_jwt_secret": "short"}, "32 bytes"),
        (
            {"auth_jwks_url": "https://i", "auth_issuer": "conversation-api", "auth_audience": "x"},
            "must differ from JWT_ISSUER",
        ),
        (
            {
                "app_env": "production",
                "jwt_secret": STRONG,
                "supabase_url": "http://abc.supabase.co",
            },
            "https",
        ),
        ({"supabase_url": "not a url"}, "supabase_url"),
    ],
)
def test_incomplete_or_unsafe_issuer_settings_are_refused(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(_env_file=None, **values)  # type: ignore[arg-type]
