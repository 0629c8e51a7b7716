"""One typed settings object, built from the environment by entry points only."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.outbound import UrlPolicy

# Where `make run` records the URLs of the stack it started, inside DATA_DIR.
PLACEHOLDERS = {"changethis", "changeme", "secret", "password", ""}


class OIDCProvider(BaseModel):
    """A third-party OpenID Connect provider people may log in with (configured, not coded:
    endpoints and keys come from the issuer's discovery document)."""

    name: str = Field(pattern=r"^[a-z0-9-]{1,32}$")
    issuer: str
    client_id: str
    client_secret: SecretStr
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile"])


def _check_issuer(provider: OIDCProvider, environment: str) -> None:
    """An issuer is an absolute URL; outside development an https one (tests may use http on
    a loopback address, where the test provider runs)."""
    url = urlsplit(provider.issuer)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"OIDC provider {provider.name!r}: the issuer must be an absolute URL")
    loopback_test = environment == "test" and url.hostname in ("127.0.0.1", "localhost", "::1")
    if environment != "development" and url.scheme != "https" and not loopback_test:
        raise ValueError(f"OIDC provider {provider.name!r}: the issuer must be an https URL")


class Settings(BaseSettings):
    """Runtime configuration; every one in docs/operations.md, Configuration."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    environment: Literal["development", "test", "production"] = "development"
    # Password hashing cost: "test" only for the test suite (refused in production).
    password_cost: Literal["production", "test"] = "production"
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)

    mongodb_url: str | None = None
    # Optional credentials apart from the URL (no escaping needed): both or neither.
    mongodb_username: str | None = None
    mongodb_password: SecretStr | None = None
    mongodb_db: str = "movie_ratings"
    redis_url: str | None = None
    # After a failed Redis call, the cache, queue and limits leave Redis alone this long
    # (reads go to MongoDB meanwhile) and log the outage once.
    redis_cooldown: float = Field(1.0, gt=0, le=60)
    data_dir: Path = Path("data")

    # Token signing: a JWKS document (private keys, each with a kid). The first key signs,
    # every key verifies, which is how keys rotate without logging anyone out.
    token_signing_keys: SecretStr | None = None
    token_issuer: str = "movie-ratings"
    token_audience: str = "movie-ratings-api"
    access_token_ttl: int = Field(900, ge=30, le=900)
    refresh_token_ttl: int = Field(30 * 24 * 3600, ge=60)

    # Third-party login: OIDC_PROVIDERS is a JSON list of {name, issuer, client_id,
    # client_secret, scopes}. PUBLIC_URL is this API's external origin (redirect URIs,
    # problem type URIs), required with providers outside development, where it defaults to
    # http://HOST:PORT; FRONTEND_URL receives browsers after login with a one-time ?code=
    # (JSON tokens when unset).
    oidc_providers: list[OIDCProvider] = Field(default_factory=list)
    public_url: str | None = None
    # Addresses of the reverse proxies in front: a request from one of them is charged to
    # the rightmost X-Forwarded-For address that is not one of them (budgets, throttles).
    trusted_proxies: list[str] = []
    frontend_url: str | None = None
    oidc_state_ttl: int = Field(600, ge=30, le=3600)

    # Budget of one database operation, in seconds (server selection and retries included):
    # the API's is short, so a stalled database answers 503 fast; the workers' fits their
    # largest aggregation and CLI tools use it too.
    mongodb_timeout: float = Field(5.0, gt=0, le=600)
    mongodb_worker_timeout: float = Field(300.0, gt=0, le=3600)
    # Writes are refused (503 with Retry-After) while the database's disk has less than this
    # many bytes free, before the database itself fails on a full disk. The free space comes
    # from the server (MongoDB's dbStats) or, where it says nothing (SecantusDB), from the
    # folder DATABASE_DISK_PATH names (the embedded stack sets it); it is read every
    # DISK_CHECK_INTERVAL seconds by each API process.
    disk_free_floor: int = Field(256 * 1024**2, ge=0)
    disk_check_interval: float = Field(2.0, gt=0, le=300)
    database_disk_path: Path | None = None

    rating_prior_votes: float = Field(10.0, ge=0)
    aggregation_delay: float = Field(0.25, ge=0, le=10)
    weighted_refresh_interval: float = Field(60.0, ge=1)
    # Beat looks this often whether a new recommendation model is due: none yet, an import
    # changed ratings since the newest (imports also ask at once), or people gave
    # recommender_new_likes likes through the API since. Between trainings each person's
    # list still follows their new ratings at once.
    recommender_interval: float = Field(30.0, ge=5)
    recommender_new_likes: int = Field(200, ge=1)
    # Fewer likes than that still make a model due once the newest is this old: a quiet
    # catalogue's new films become recommendable within minutes too.
    recommender_max_age: float = Field(600.0, ge=30)
    # Similar movies: only films this many people like are listed (a film liked a handful
    # of times has its few fans' taste, not its own). Applies from the next training.
    similar_min_likes: int = Field(10, ge=1)
    # How often an API process looks for a newer model (one small query).
    recommender_check: float = Field(10.0, ge=0, le=3600)
    # The global mean C is republished (and every weighted score rewritten, in small
    # batches) only when it moved more than this many stars; weighted scores use the
    # published C, so they stay exact with respect to it. A republish rewrites every rated
    # movie (23 s for ml-latest-small's 9,700 on SecantusDB, which rewrites a movie's 12
    # index entries on every update); C off by 0.05 moves a weighted score by at most that.
    weighted_mean_tolerance: float = Field(0.05, ge=0, le=1)
    # Beat drains the recompute intents this often, whatever the broker did meanwhile; a
    # round reads at most drain_batch intent documents, and takes the oldest rating writes
    # older than drain_settle seconds (in the database server's clock) that no round took
    # yet, as many as name at most drain_batch movies and users.
    drain_interval: float = Field(5.0, gt=0, le=300)
    drain_batch: int = Field(2000, ge=1, le=10_000)
    drain_settle: float = Field(1.0, ge=0, le=60)
    # Under a steady write load a drain keeps the database busy at most this share of the
    # time (it rests in between), leaving the rest to the API's requests.
    drain_duty: float = Field(0.25, gt=0, le=1)
    # ... but only while the API serves at least this many requests a second (all processes
    # together, counted in Redis): with nobody waiting, a drain runs without resting.
    drain_idle_below: float = Field(5.0, ge=0)

    # Imports: paths given to the API are confined to import_root (default DATA_DIR/imports);
    # downloads are cached in DATA_DIR/cache.
    import_root: Path | None = None
    # Import URLs: only these hosts (exact names), public addresses only, at most this size.
    import_url_hosts: list[str] = Field(default_factory=lambda: ["files.grouplens.org"])
    import_max_bytes: int = Field(1024**3, ge=1)
    # Tests only: lets import URLs reach loopback and private addresses (refused in production).
    import_url_allow_private: bool = False
    movielens_base_url: str = "https://files.grouplens.org/datasets/movielens"
    import_batch_size: int = Field(5000, ge=10, le=100_000)
    # A running job whose heartbeat is older than this is taken to have lost its worker; the
    # import lease lapses after as long without renewal; a queued job whose message went out
    # this long ago is sent again. Beat sweeps for both every import_sweep_interval seconds.
    import_stale_after: float = Field(30.0, ge=2)
    import_sweep_interval: float = Field(15.0, ge=1, le=3600)

    # Reads: cache-aside in Redis (entries live cache_ttl ± 10 %).
    cache_enabled: bool = True
    cache_ttl: float = Field(60.0, gt=0, le=24 * 3600)
    # Each API process also keeps hot entries in memory, dropped on every invalidation
    # (Redis pub/sub); this only bounds what a lost message could cost. 0 turns it off.
    cache_near_ttl: float = Field(5.0, ge=0, le=60)
    # Bytes each API process's near cache holds at most (least recently used go first).
    cache_near_max_bytes: int = Field(32 * 2**20, ge=0, le=2**34)

    # Serving: WEB_CONCURRENCY API processes share the port (SO_REUSEPORT).
    web_concurrency: int = Field(1, ge=1, le=64)
    # Internal: the listening socket a multi-process server hands its processes (they
    # share that one socket; never a port with another server).
    listen_fd: int | None = Field(None, ge=0)
    # Slow clients: a request head (line and headers) must arrive within http_header_timeout
    # seconds of its first byte (or of the connection opening), a JSON body within
    # http_body_timeout; an idle keep-alive connection closes after http_keepalive_timeout;
    # past http_max_connections per process the oldest connection not being answered closes.
    http_header_timeout: float = Field(10.0, gt=0, le=300)
    http_body_timeout: float = Field(30.0, gt=0, le=600)
    http_keepalive_timeout: float = Field(15.0, gt=0, le=600)
    http_max_connections: int = Field(1000, ge=10, le=100_000)
    # Adds X-DB-Calls (MongoDB commands this request sent) to responses: benchmarks, tests.
    expose_db_calls: bool = False

    # Login throttling, per window: attempts per client IP; wrong passwords per (account, IP)
    # (each check counted before it runs, a right one given back) before that pair is
    # refused; password checks per account (a token bucket refilled at this many per window)
    # from addresses it has not logged in from within login_known_address_days.
    login_rate_per_ip: int = Field(30, ge=1)
    login_failures_per_pair: int = Field(10, ge=1)
    login_checks_per_account: int = Field(60, ge=1)
    login_known_address_days: int = Field(30, ge=1, le=365)
    login_rate_window: int = Field(60, ge=1)
    # Admission control (api.admission): a request to /api/v1 costs admission_cost_read
    # units, or admission_cost_heavy for a search, a filtered list or an offset, taken from
    # its client's bucket (per account or client with a valid token, else per address):
    # a bucket holds admission_budget_* units, refilled at that many per admission_window
    # seconds. Each process runs at most admission_inflight admitted requests at once, of
    # them admission_anonymous_inflight anonymous and admission_anonymous_heavy_inflight
    # anonymous heavy ones; past those, 503 at once.
    admission_enabled: bool = True
    admission_cost_read: int = Field(1, ge=1, le=1000)
    admission_cost_heavy: int = Field(10, ge=1, le=1000)
    admission_budget_address: int = Field(600, ge=1)
    admission_budget_account: int = Field(2400, ge=1)
    admission_window: int = Field(60, ge=1, le=3600)
    admission_inflight: int = Field(16, ge=1, le=10_000)
    admission_anonymous_inflight: int = Field(8, ge=0, le=10_000)
    admission_anonymous_heavy_inflight: int = Field(2, ge=0, le=10_000)
    # A deleted account's username is kept from new accounts this many days.
    username_retired_days: int = Field(30, ge=0, le=3650)
    # Deleting a password-less account needs a provider login this recent (seconds).
    fresh_login_seconds: int = Field(600, ge=30, le=86400)
    # Accounts made per client IP per signup_rate_window seconds (POST /users).
    signup_rate_per_ip: int = Field(10, ge=1)
    signup_rate_window: int = Field(3600, ge=1)
    # Passwords are hashed and checked by password_workers threads at once, with at most
    # password_waiting more queued; past that a 503 with Retry-After at once.
    password_workers: int = Field(2, ge=1, le=64)
    password_waiting: int = Field(16, ge=0, le=1000)

    celery_queue: str = "movie-ratings"
    log_level: str = "INFO"
    client_max_size: int = 1024 * 1024

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        for provider in self.oidc_providers:
            _check_issuer(provider, self.environment)
        if self.environment == "development":
            return self
        if self.oidc_providers and not self.public_url:
            # Redirect URIs are built from it: never from a request's Host header.
            raise ValueError("PUBLIC_URL is required when OIDC_PROVIDERS are configured")
        if self.mongodb_url is None or self.redis_url is None:
            raise ValueError("MONGODB_URL and REDIS_URL are required outside development")
        if self.environment == "production":
            if self.import_url_allow_private:
                raise ValueError("IMPORT_URL_ALLOW_PRIVATE must not be set in production")
            if self.password_cost != "production":
                raise ValueError("PASSWORD_COST must be production in production")
            keys = self.token_signing_keys.get_secret_value() if self.token_signing_keys else ""
            if keys.strip().lower() in PLACEHOLDERS:
                raise ValueError("TOKEN_SIGNING_KEYS must be set to a JWKS in production")
            for provider in self.oidc_providers:
                if provider.client_secret.get_secret_value().lower() in PLACEHOLDERS:
                    raise ValueError(f"OIDC provider {provider.name!r} has a placeholder secret")
        return self

    @property
    def public_base(self) -> str:
        """This API's external origin: PUBLIC_URL, else (development) where it listens."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def redis_url_required(self) -> str:
        """REDIS_URL, which every process needs (broker, cache, rate limits, login state)."""
        if self.redis_url is None:
            raise ValueError("REDIS_URL is not set")
        return self.redis_url

    @property
    def import_url_policy(self) -> UrlPolicy:
        """What an import job's URL may reach."""
        return UrlPolicy.allowing(
            self.import_url_hosts,
            allow_private=self.import_url_allow_private,
            max_bytes=self.import_max_bytes,
        )

    @property
    def imports_dir(self) -> Path:
        return self.import_root or self.data_dir / "imports"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def signing_keys_file(self) -> Path:
        return self.data_dir / "jwks.json"


def settings_problem(exc: ValueError) -> str:
    """One line saying which setting is wrong (a command prints it instead of a traceback)."""
    errors = getattr(exc, "errors", None)
    if callable(errors) and errors():
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())).upper()
        return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    return str(exc).splitlines()[0]


def environment_help(*names: str) -> str:
    """A command's --help epilog: these settings' environment variables, with defaults."""
    lines = ["environment (default in brackets; every setting: docs/operations.md):"]
    for name in names:
        default = Settings.model_fields[name].default
        shown = "unset" if default is None or default is PydanticUndefined else default
        lines.append(f"  {name.upper():<20} [{shown}]")
    return "\n".join(lines)
