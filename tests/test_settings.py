"""Settings refuse unsafe configurations outside development."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from core.security import TokenService, generate_keyset, load_keyset
from core.settings import Settings

URLS = {"mongodb_url": "mongodb://db", "redis_url": "redis://cache"}


def test_development_defaults_need_nothing():
    settings = Settings(_env_file=None)
    assert settings.environment == "development" and settings.port == 8080


@pytest.mark.parametrize("keys", [None, "changethis", "  "])
def test_production_refuses_missing_or_placeholder_signing_keys(keys):
    with pytest.raises(ValidationError):
        Settings(environment="production", token_signing_keys=keys, **URLS)


def test_production_requires_service_urls():
    keys = json.dumps(generate_keyset().as_dict(private=True))
    with pytest.raises(ValidationError):
        Settings(environment="production", token_signing_keys=keys)
    assert Settings(environment="production", token_signing_keys=keys, **URLS).redis_url


def test_access_tokens_are_short_lived():
    with pytest.raises(ValidationError):
        Settings(access_token_ttl=3600)


def test_development_key_is_generated_once_and_reused(tmp_path):
    settings = Settings(data_dir=tmp_path)
    first = load_keyset(settings)
    again = load_keyset(settings)
    assert first.keys[0].kid == again.keys[0].kid
    assert (tmp_path / "jwks.json").stat().st_mode & 0o077 == 0


def test_any_listed_key_verifies_so_keys_rotate(tmp_path):
    old, new = generate_keyset(), generate_keyset()
    settings = Settings(data_dir=tmp_path)
    token = TokenService(settings, old).issue(subject="u1", scopes=["ratings:write"])
    both = json.dumps(
        {"keys": new.as_dict(private=True)["keys"] + old.as_dict(private=True)["keys"]}
    )
    rotated = TokenService(
        Settings(token_signing_keys=both), load_keyset(Settings(token_signing_keys=both))
    )
    assert rotated.verify(token).subject == "u1"
    assert rotated.public_jwks()["keys"][0]["kid"] == new.keys[0].kid
    assert "d" not in rotated.public_jwks()["keys"][0]


def _provider(issuer: str) -> list[dict[str, str]]:
    return [{"name": "p", "issuer": issuer, "client_id": "c", "client_secret": "a-real-secret"}]


@pytest.mark.parametrize(
    "issuer", ["http://accounts.example.com", "accounts.example.com", "https://", "ftp://x.org"]
)
def test_issuers_outside_development_are_absolute_https_urls(issuer):
    keys = json.dumps(generate_keyset().as_dict(private=True))
    with pytest.raises(ValidationError, match="issuer"):
        Settings(
            environment="production",
            token_signing_keys=keys,
            oidc_providers=_provider(issuer),
            **URLS,
        )
    good = Settings(
        environment="production",
        token_signing_keys=keys,
        oidc_providers=_provider("https://accounts.example.com"),
        public_url="https://api.example.com",
        **URLS,
    )
    assert good.oidc_providers[0].issuer.startswith("https://")


def test_http_issuers_only_on_loopback_in_tests_and_anywhere_in_development():
    here = {"public_url": "http://127.0.0.1:8080", **URLS}
    Settings(environment="test", oidc_providers=_provider("http://127.0.0.1:5000"), **here)
    with pytest.raises(ValidationError, match="https"):
        Settings(environment="test", oidc_providers=_provider("http://idp.internal"), **here)
    Settings(oidc_providers=_provider("http://idp.internal"))
    with pytest.raises(ValidationError, match="absolute"):
        Settings(oidc_providers=_provider("idp.internal"))


def test_production_refuses_private_import_urls():
    keys = json.dumps(generate_keyset().as_dict(private=True))
    with pytest.raises(ValidationError, match="IMPORT_URL_ALLOW_PRIVATE"):
        Settings(
            environment="production",
            token_signing_keys=keys,
            import_url_allow_private=True,
            **URLS,
        )


def test_production_refuses_cheap_password_hashing():
    keys = json.dumps(generate_keyset().as_dict(private=True))
    with pytest.raises(ValidationError, match="PASSWORD_COST"):
        Settings(environment="production", token_signing_keys=keys, password_cost="test", **URLS)
    assert Settings(environment="production", token_signing_keys=keys, **URLS).password_cost == (
        "production"
    )


def test_providers_outside_development_need_a_public_url():
    keys = json.dumps(generate_keyset().as_dict(private=True))
    providers = _provider("https://accounts.example.com")
    for environment in ("test", "production"):
        with pytest.raises(ValidationError, match="PUBLIC_URL"):
            Settings(
                environment=environment,
                token_signing_keys=keys,
                oidc_providers=providers,
                **URLS,
            )
    # Development answers where it listens, never where a request says it is.
    assert Settings(oidc_providers=providers, port=8123).public_base == "http://127.0.0.1:8123"
