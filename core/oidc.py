"""OpenID Connect relying party: discovery, authorization code flow with PKCE, ID tokens.

Authlib builds the protocol values (PKCE S256 challenge, random state/nonce/verifier,
authorization URL); joserfc verifies ID tokens against the provider's JWKS. Discovery
documents and key sets are cached per provider, and the key set is fetched again once when
a token names a `kid` it does not hold (the provider rotated its keys).

Login state (state → nonce, verifier, provider, purpose) lives in Redis for a few minutes
and is taken with GETDEL, so each state works once. It is bound to the browser that started
the login (RFC 9700 §4.7.1): that browser holds a secret in a cookie whose hash the state
keeps, and a callback without it is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote_plus

import aiohttp
import orjson
from authlib.common.security import generate_token
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.errors import DomainError, NotFound, ServiceUnavailable
from core.settings import OIDCProvider, Settings

# Asymmetric algorithms only: never "none", never an HMAC keyed with the client secret.
PROFILE_CLAIMS = ("email", "email_verified", "name", "preferred_username")
SIGNING_ALGORITHMS = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"}
METADATA_TTL = 3600.0
CLOCK_SKEW = 60


def client_secret_basic(provider: OIDCProvider) -> str:
    """RFC 6749 §2.3.1: id and secret form-encoded, then Basic."""
    pair = (
        f"{quote_plus(provider.client_id)}:{quote_plus(provider.client_secret.get_secret_value())}"
    )
    return "Basic " + base64.b64encode(pair.encode()).decode()


class LoginFailed(DomainError):
    """The provider or its answer cannot be trusted; nothing was created."""

    status, title, slug = 400, "Login Failed", "login-failed"


@dataclass(frozen=True, slots=True)
class LoginState:
    provider: str
    nonce: str
    verifier: str
    redirect_uri: str
    response: str  # "json" or "redirect"
    browser: str  # SHA-256 of the secret in the starting browser's cookie
    link_user: str | None = None  # set when a logged-in user links another provider


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class _Cached:
    metadata: dict[str, Any]
    keys: KeySet | None
    fetched: float


class OIDCClient:
    """Talks to the configured providers; one per process, over the app's HTTP session."""

    def __init__(self, settings: Settings, http: aiohttp.ClientSession, redis: Redis) -> None:
        self._providers = {p.name: p for p in settings.oidc_providers}
        self._http = http
        self._redis = redis
        self._prefix = f"{settings.mongodb_db}:oidc:"
        self._state_ttl = settings.oidc_state_ttl
        self._cache: dict[str, _Cached] = {}

    def provider(self, name: str) -> OIDCProvider:
        try:
            return self._providers[name]
        except KeyError:
            raise NotFound(f"No login provider named {name[:40]!r}.") from None

    # ---- provider documents ----------------------------------------------------------------

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with self._http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                if resp.status != 200:
                    raise ServiceUnavailable(f"The login provider answered {resp.status}.")
                return orjson.loads(await resp.read())
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            raise ServiceUnavailable("The login provider cannot be reached.") from exc

    async def metadata(self, name: str) -> dict[str, Any]:
        provider = self.provider(name)
        cached = self._cache.get(name)
        if cached is None or time.monotonic() - cached.fetched > METADATA_TTL:
            url = provider.issuer.rstrip("/") + "/.well-known/openid-configuration"
            document = await self._get_json(url)
            if document.get("issuer", "").rstrip("/") != provider.issuer.rstrip("/"):
                raise ServiceUnavailable("The provider's discovery document names another issuer.")
            cached = _Cached(metadata=document, keys=None, fetched=time.monotonic())
            self._cache[name] = cached
        return cached.metadata

    async def _keys(self, name: str, *, refresh: bool = False) -> KeySet:
        metadata = await self.metadata(name)
        cached = self._cache[name]
        if cached.keys is None or refresh:
            document: Any = await self._get_json(metadata["jwks_uri"])
            try:
                cached.keys = KeySet.import_key_set(document)
            except (JoseError, ValueError, KeyError, TypeError) as exc:
                raise ServiceUnavailable("The login provider published unusable keys.") from exc
        return cached.keys

    # ---- the flow --------------------------------------------------------------------------

    async def authorization_url(
        self, name: str, *, redirect_uri: str, response: str, link_user: str | None = None
    ) -> tuple[str, str]:
        """Where to send the browser, and the secret that browser must hold in its cookie;
        the state that will come back is stored in Redis."""
        provider = self.provider(name)
        metadata = await self.metadata(name)
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        browser = generate_token(32)
        record = LoginState(
            name, nonce, verifier, redirect_uri, response, _hash(browser), link_user
        )
        await self._put(self._prefix + "state:" + state, orjson.dumps(asdict(record)))
        url = add_params_to_uri(
            metadata["authorization_endpoint"],
            {
                "response_type": "code",
                "client_id": provider.client_id,
                "redirect_uri": redirect_uri,
                "scope": " ".join(provider.scopes),
                "state": state,
                "nonce": nonce,
                "code_challenge": create_s256_code_challenge(verifier),
                "code_challenge_method": "S256",
            },
        )
        return url, browser

    async def _put(self, key: str, value: bytes | str, ttl: int | None = None) -> None:
        try:
            await self._redis.set(key, value, ex=ttl or self._state_ttl)
        except RedisError as exc:
            raise ServiceUnavailable("Login is unavailable right now; try again soon.") from exc

    async def _take(self, key: str) -> bytes | str | None:
        try:
            return await self._redis.getdel(key)
        except RedisError as exc:
            raise ServiceUnavailable("Login is unavailable right now; try again soon.") from exc

    async def take_state(self, name: str, state: str | None, *, browser: str | None) -> LoginState:
        """The login this callback belongs to: a state works once, for one provider, and
        only in the browser that started it (`browser`: the secret from its cookie)."""
        if not state or len(state) > 200:
            raise LoginFailed("The login state is missing.")
        raw = await self._take(self._prefix + "state:" + state)
        if raw is None:
            raise LoginFailed("The login state is unknown, expired or already used.")
        record = LoginState(**orjson.loads(raw))
        if record.provider != name:
            raise LoginFailed("The login state belongs to another provider.")
        if not browser or not hmac.compare_digest(_hash(browser), record.browser):
            raise LoginFailed(
                "This login was not started in this browser (or its cookie was blocked); "
                "start it again from here."
            )
        return record

    async def hand_over(self, url: str, browser: str) -> str:
        """A one-time ticket for a login started by an API call (linking a provider): the
        browser that opens the ticket's URL receives the cookie, then goes to `url`."""
        ticket = generate_token(32)
        await self._put(self._prefix + "ticket:" + ticket, orjson.dumps([url, browser]))
        return ticket

    async def take_ticket(self, ticket: str) -> tuple[str, str]:
        """The provider URL and browser secret of a ticket, once."""
        raw = await self._take(self._prefix + "ticket:" + ticket) if len(ticket) <= 200 else None
        if raw is None:
            raise LoginFailed("The link is unknown, expired or already used; start again.")
        url, browser = orjson.loads(raw)
        return str(url), str(browser)

    async def profile(
        self, name: str, claims: dict[str, Any], *, access_token: str | None
    ) -> dict[str, Any]:
        """The ID token's claims, completed from UserInfo (OIDC Core §5.3) when the token
        carries no profile claims and the provider has the endpoint; UserInfo must speak
        of the same subject."""
        metadata = await self.metadata(name)
        endpoint = metadata.get("userinfo_endpoint")
        if any(c in claims for c in PROFILE_CLAIMS) or not endpoint or not access_token:
            return claims
        try:
            async with self._http.get(
                endpoint,
                headers={"Authorization": f"Bearer {access_token}"},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp:
                if resp.status != 200:
                    raise ServiceUnavailable(f"The provider's UserInfo answered {resp.status}.")
                info = orjson.loads(await resp.read())
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            raise ServiceUnavailable("The login provider cannot be reached.") from exc
        if not isinstance(info, dict) or str(info.get("sub")) != str(claims["sub"]):
            raise LoginFailed("The provider's UserInfo speaks of another subject.")
        return {**claims, **{c: info[c] for c in PROFILE_CLAIMS if c in info}}

    async def exchange(self, name: str, *, code: str, login: LoginState) -> dict[str, Any]:
        """Trade the authorization code (and the PKCE verifier) for the provider's tokens."""
        provider = self.provider(name)
        metadata = await self.metadata(name)
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": login.redirect_uri,
            "code_verifier": login.verifier,
        }
        try:
            async with self._http.post(
                metadata["token_endpoint"],
                data=form,
                headers={"Authorization": client_secret_basic(provider)},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp:
                body = orjson.loads(await resp.read() or b"{}")
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            raise ServiceUnavailable("The login provider cannot be reached.") from exc
        if resp.status != 200 or "id_token" not in body:
            error = str(body.get("error", "no id_token"))[:80]
            raise LoginFailed(f"The provider refused the code exchange ({error}).")
        return body

    async def verify_id_token(
        self, name: str, id_token: str, *, nonce: str, now: int | None = None
    ) -> dict[str, Any]:
        """Signature (JWKS), iss, aud, exp, iat and nonce of an ID token; its claims."""
        provider = self.provider(name)
        metadata = await self.metadata(name)
        allowed = set(metadata.get("id_token_signing_alg_values_supported", ["RS256"]))
        algorithms = sorted(SIGNING_ALGORITHMS & allowed)
        try:
            try:
                token = jwt.decode(id_token, await self._keys(name), algorithms=algorithms)
            except JoseError:
                # Perhaps a key we have not seen yet: fetch the set again, once.
                keys = await self._keys(name, refresh=True)
                token = jwt.decode(id_token, keys, algorithms=algorithms)
            registry = jwt.JWTClaimsRegistry(
                now=now,
                leeway=CLOCK_SKEW,
                iss={"essential": True, "value": metadata["issuer"]},
                aud={"essential": True, "value": provider.client_id},
                sub={"essential": True},
                exp={"essential": True},
                iat={"essential": True},
                nonce={"essential": True, "value": nonce},
            )
            registry.validate(token.claims)
        except (JoseError, ValueError, TypeError) as exc:
            raise LoginFailed(f"The ID token is not valid ({type(exc).__name__}).") from None
        claims = token.claims
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != provider.client_id:
            raise LoginFailed("The ID token was issued to another party (azp).")
        return dict(claims)

    async def issue_link_code(self, *, provider: str, subject: str, user_id: str) -> str:
        """A one-time code for linking (provider, subject) to the account that started the
        link: the link is made only when that account presents it (`take_link_code`)."""
        code = generate_token(43)
        record = {"provider": provider, "subject": subject, "user_id": user_id}
        await self._put(self._prefix + "link:" + code, orjson.dumps(record))
        return code

    async def take_link_code(self, code: str) -> dict[str, str] | None:
        """What a link code was issued for, once; None when unknown, expired or used."""
        raw = await self._take(self._prefix + "link:" + code) if len(code) <= 200 else None
        return None if raw is None else dict(orjson.loads(raw))

    async def issue_code(self, *, user_id: str, ttl: int = 60) -> str:
        """A one-time code a front end trades for tokens at POST /auth/token."""
        code = generate_token(43)
        await self._put(self._prefix + "code:" + code, user_id, ttl)
        return code

    async def take_code(self, code: str) -> str | None:
        """The user a one-time code was issued for, once."""
        raw = await self._take(self._prefix + "code:" + code) if len(code) <= 200 else None
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)
