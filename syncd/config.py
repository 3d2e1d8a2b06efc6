"""One immutable settings object, read from ``SYNCD_*`` environment variables once at start-up.

Every setting is documented in README.md ("Settings"); keep the two in step.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

MIB = 1024 * 1024
_PREFIX = re.compile(r"(/[A-Za-z0-9._-]+)+")
# scheme://host[:port] as browsers send it in the Origin header: no path, no trailing slash.
_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s,]+")
# "none" is never accepted, whatever the configuration says.
JWT_ALGORITHMS = (
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512", "EdDSA",
)

# SYNCD_* variables that are not settings: the test suite, the JS client's tests and the load
# scripts use them for themselves, and syncd processes they start inherit them.
NOT_SETTINGS = frozenset({
    "SYNCD_TEST_DATABASE_URL",  # tests/support.py: the PostgreSQL the tests create databases on
    "SYNCD_URL",  # tests/e2e: where the node scenarios find the syncd under test
    "SYNCD_PYTHON",  # clients/js tests: the Python that runs syncd
    "SYNCD_PID",  # loadtests/locust_profiles.sh: the server it stops
    "SYNCD_ARTIFACTS_DIR",  # tests/browser.py: where browser tests write their screenshots
})


class ConfigError(ValueError):
    """A ``SYNCD_*`` variable holds a value syncd cannot use."""


@dataclass(frozen=True, slots=True)
class Settings:
    # Where PostgreSQL is. Empty means: start the embedded PostgreSQL in ``data_dir``.
    database_url: str = ""
    data_dir: Path = field(default_factory=lambda: Path(".syncd"))
    # How long `syncd serve` and `syncd migrate` wait for a SYNCD_DATABASE_URL that does not
    # answer yet (compose and Kubernetes start everything at once) before giving up.
    database_wait_seconds: float = 60.0
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    log_level: str = "info"
    # "text", or "json": one JSON object per line for log shippers (syncd/logs.py).
    log_format: str = "text"
    # 100 push rows whose assumed and new states are 1 MB each must fit, plus the JSON around them.
    max_body_bytes: int = 256 * MIB
    pull_default_limit: int = 100
    pull_max_limit: int = 10_000
    db_pool_min: int = 2
    db_pool_max: int = 10
    # A statement that runs longer than this is cancelled, so that no pull or push holds the
    # xid horizon (and with it every other pull) back for long.
    db_statement_timeout_ms: int = 30_000
    # Streaming replicas of SYNCD_DATABASE_URL (comma-separated URLs) that serve pulls, stream
    # reads and head polls (docs/scaling.md); pushes and everything else stay on the primary.
    database_replica_urls: str = ""
    # A replica whose replay lag is above this is taken out of rotation until it catches up.
    replica_max_lag_ms: int = 1000
    # How often each node measures the replicas' lag.
    replica_check_ms: int = 250
    # How long a node trusts its cached copy of a collection's definition.
    collection_cache_seconds: float = 5.0
    # Live streams: how often each node polls the heads of the feeds it streams (finds rows
    # written by plain SQL, and is the fallback for lost wake-ups) ...
    stream_poll_ms: int = 25
    # ... how often it tells the other nodes which collections it wrote to (one NOTIFY per
    # interval, outside any write transaction) ...
    stream_notify_ms: int = 10
    # ... how much may wait for one slow subscriber before it is told to resync instead ...
    stream_buffer_bytes: int = 8 * MIB
    # ... and at most how many changes one frame carries.
    stream_frame_limit: int = 1000
    # A push is answered once the caller's own streams on this node have been sent its changes
    # (RxDB loses quick edits when the echo comes after the answer), waiting at most this long;
    # a stream that is not caught up by then is told to resync instead. 0 answers at once.
    push_echo_wait_ms: int = 500
    # Websocket ping interval (and timeout), so idle proxies keep streams open; 0 disables.
    ws_ping_seconds: float = 20.0
    # Where the rxdb-server protocol (``replicateServer``) is served: the client's url is
    # ``http://HOST:PORT{prefix}/{collection}/{schemaVersion}``. Empty serves it at the root.
    rxdb_server_prefix: str = "/rxdb"
    # Where RxDB's websocket replication (``replicateWithWebsocketServer``) is served: the
    # client's url is ``ws://HOST:PORT{path}``, for every collection.
    rxdb_ws_path: str = "/rxdb/ws"
    # Server-Sent Events: seconds between ``: keepalive`` comments on an idle stream; 0 disables.
    sse_keepalive_seconds: float = 15.0
    # Browser origins allowed to call syncd with credentials (comma-separated), or ``*`` for any
    # (the request's own Origin is echoed; ``*`` is never sent). Empty: no CORS headers at all.
    cors_origins: str = ""

    # Authentication (docs/security.md): none | jwt | forward | api-key.
    auth_mode: str = "none"
    # Mode none serves anyone: refuse a non-loopback address unless this is true.
    auth_none_allow_public: bool = False
    # Service keys, as comma-separated NAME:SHA256HEX (`syncd api-key new NAME` makes one).
    api_keys: str = ""
    # jwt: the accepted algorithms (never taken from the token), and where keys come from.
    jwt_algorithms: str = ""
    jwt_secret: str = ""
    jwt_jwks_url: str = ""
    jwt_jwks_file: str = ""
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_leeway_seconds: float = 30.0
    jwt_jwks_cache_seconds: float = 300.0
    # An unknown `kid` refreshes the key set at most this often.
    jwt_jwks_min_refresh_seconds: float = 30.0
    # forward: the existing API's endpoint that says whether a request's credentials are valid.
    forward_url: str = ""
    forward_timeout_ms: int = 2000
    forward_cache_seconds: float = 10.0
    # Open streams authenticated by forward ask the API again this often (bypassing the cache),
    # and end when it no longer says yes: the longest a revoked user keeps receiving changes.
    # 0 disables it (streams then live until they close).
    forward_recheck_seconds: float = 15.0
    # Claims taken from the answer's headers, as CLAIM=Header pairs: "sub=X-User-Id,role=X-Role".
    forward_claim_headers: str = ""
    # The claim naming the caller (logs, identity.subject).
    subject_claim: str = "sub"

    # The admin page (/admin): callers whose claim CLAIM includes VALUE ("role=admin") may see
    # it besides service keys; empty admits service keys only.
    admin_claim: str = ""
    # How often each node writes its heartbeat (counts, subscribers, errors) into syncd_nodes;
    # a node not heard from for three intervals drops off the page.
    admin_heartbeat_seconds: float = 5.0
    # The page warns when the pull horizon (oldest transaction's age) is older than this.
    admin_lag_warning_seconds: float = 10.0

    @property
    def admin_claim_pair(self) -> tuple[str, str] | None:
        """``SYNCD_ADMIN_CLAIM`` as (claim, value); None when unset."""
        claim, _, value = self.admin_claim.partition("=")
        return (claim.strip(), value.strip()) if self.admin_claim else None

    @property
    def jwt_algorithm_list(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.jwt_algorithms.split(",") if a.strip())

    def _check_auth(self) -> None:
        modes = ("none", "jwt", "forward", "api-key")
        if self.auth_mode not in modes:
            raise ConfigError(f"SYNCD_AUTH_MODE must be one of {', '.join(modes)}, "
                              f"got {self.auth_mode!r}")
        if self.auth_mode == "api-key" and not self.api_keys:
            raise ConfigError("SYNCD_AUTH_MODE=api-key needs SYNCD_API_KEYS")
        if self.auth_mode == "forward" and not self.forward_url.startswith(
            ("http://", "https://")
        ):
            raise ConfigError("SYNCD_AUTH_MODE=forward needs SYNCD_FORWARD_URL (http(s)://...)")
        if not self.forward_recheck_seconds >= 0:
            raise ConfigError("SYNCD_FORWARD_RECHECK_SECONDS must not be negative (0 disables "
                              f"rechecks), got {self.forward_recheck_seconds}")
        if self.auth_mode != "jwt":
            return
        algorithms = self.jwt_algorithm_list
        if not algorithms:
            raise ConfigError("SYNCD_AUTH_MODE=jwt needs SYNCD_JWT_ALGORITHMS, e.g. RS256")
        unsupported = [a for a in algorithms if a not in JWT_ALGORITHMS]
        if unsupported:
            raise ConfigError(f"SYNCD_JWT_ALGORITHMS: unsupported {', '.join(unsupported)}; "
                              f"use {', '.join(JWT_ALGORITHMS)}")
        if any(a.startswith("HS") for a in algorithms) and not self.jwt_secret:
            raise ConfigError("HS* algorithms need SYNCD_JWT_SECRET")
        if any(not a.startswith("HS") for a in algorithms) and not (
            self.jwt_jwks_url or self.jwt_jwks_file
        ):
            raise ConfigError("RS/PS/ES/EdDSA algorithms need SYNCD_JWT_JWKS_URL or "
                              "SYNCD_JWT_JWKS_FILE")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        _refuse_unknown(env)
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get("SYNCD_" + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, str(f.type), raw)
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        if not 1 <= self.pull_default_limit <= self.pull_max_limit:
            raise ConfigError(
                "SYNCD_PULL_DEFAULT_LIMIT must be between 1 and SYNCD_PULL_MAX_LIMIT "
                f"({self.pull_max_limit}), got {self.pull_default_limit}"
            )
        if self.max_body_bytes < 1024:
            raise ConfigError("SYNCD_MAX_BODY_BYTES must be at least 1024")
        if not 1 <= self.db_pool_min <= self.db_pool_max:
            raise ConfigError("need 1 <= SYNCD_DB_POOL_MIN <= SYNCD_DB_POOL_MAX")
        if self.stream_poll_ms < 1 or self.stream_notify_ms < 1 or self.stream_frame_limit < 1:
            raise ConfigError(
                "SYNCD_STREAM_POLL_MS, SYNCD_STREAM_NOTIFY_MS and SYNCD_STREAM_FRAME_LIMIT "
                "must be positive"
            )
        if self.push_echo_wait_ms < 0:
            raise ConfigError("SYNCD_PUSH_ECHO_WAIT_MS must not be negative")
        if self.stream_buffer_bytes < 1024 or self.ws_ping_seconds < 0:
            raise ConfigError(
                "SYNCD_STREAM_BUFFER_BYTES must be at least 1024 and SYNCD_WS_PING_SECONDS "
                "must not be negative"
            )
        self._check_auth()
        if not 0 < self.port < 65536:
            raise ConfigError(f"SYNCD_PORT must be between 1 and 65535, got {self.port}")
        if self.db_statement_timeout_ms < 1 or not self.collection_cache_seconds >= 0:
            raise ConfigError(
                "SYNCD_DB_STATEMENT_TIMEOUT_MS must be positive and "
                "SYNCD_COLLECTION_CACHE_SECONDS must not be negative"
            )
        if not self.database_wait_seconds >= 0:
            raise ConfigError("SYNCD_DATABASE_WAIT_SECONDS must not be negative")
        if self.workers < 1:
            raise ConfigError("SYNCD_WORKERS must be at least 1")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"SYNCD_LOG_FORMAT must be text or json, got {self.log_format!r}")
        if self.database_url and not self.database_url.startswith(
            ("postgresql://", "postgres://")
        ):
            raise ConfigError("SYNCD_DATABASE_URL must start with postgresql://")
        self._check_replicas()
        prefix = self.rxdb_server_prefix
        if prefix and (
            not prefix.startswith("/") or prefix.endswith("/") or not _PREFIX.fullmatch(prefix)
        ):
            raise ConfigError(
                "SYNCD_RXDB_SERVER_PREFIX must be empty or a path like /rxdb (a leading and no "
                f"trailing slash; letters, digits, '-', '_', '.', '/'), got {prefix!r}"
            )
        if not _PREFIX.fullmatch(self.rxdb_ws_path):
            raise ConfigError(
                "SYNCD_RXDB_WS_PATH must be a path like /rxdb/ws (a leading and no trailing "
                f"slash; letters, digits, '-', '_', '.', '/'), got {self.rxdb_ws_path!r}"
            )
        claim = self.admin_claim_pair
        if claim is not None and not (claim[0] and claim[1] and "=" in self.admin_claim):
            raise ConfigError("SYNCD_ADMIN_CLAIM must be CLAIM=VALUE, e.g. role=admin, got "
                              f"{self.admin_claim!r}")
        if not self.admin_heartbeat_seconds > 0 or not self.admin_lag_warning_seconds > 0:
            raise ConfigError("SYNCD_ADMIN_HEARTBEAT_SECONDS and SYNCD_ADMIN_LAG_WARNING_SECONDS "
                              "must be positive")
        if not self.sse_keepalive_seconds >= 0:
            raise ConfigError("SYNCD_SSE_KEEPALIVE_SECONDS must not be negative")
        for origin in self.cors_origin_list:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ConfigError(
                    "SYNCD_CORS_ORIGINS must be '*' or comma-separated origins like "
                    f"https://app.example.com or http://localhost:3000 (no path), got {origin!r}"
                )

    @property
    def replica_url_list(self) -> tuple[str, ...]:
        return tuple(u.strip() for u in self.database_replica_urls.split(",") if u.strip())

    def _check_replicas(self) -> None:
        urls = self.replica_url_list
        if urls and not self.database_url:
            raise ConfigError("SYNCD_DATABASE_REPLICA_URLS needs SYNCD_DATABASE_URL: replicas "
                              "are standbys of a PostgreSQL you run, not of the embedded one")
        for url in urls:
            if not url.startswith(("postgresql://", "postgres://")):
                raise ConfigError("SYNCD_DATABASE_REPLICA_URLS must be comma-separated URLs "
                                  f"starting with postgresql://, got {_without_credentials(url)}")
        if self.replica_max_lag_ms < 0 or self.replica_check_ms < 1:
            raise ConfigError("SYNCD_REPLICA_MAX_LAG_MS must not be negative and "
                              "SYNCD_REPLICA_CHECK_MS must be positive")

    def auth_summary(self) -> str:
        """The authentication in force, for one log line at start; never a secret."""
        mode = self.auth_mode
        if mode == "none":
            text = "none (anyone may read and write everything)"
        elif mode == "jwt":
            keys = []
            if any(a.startswith("HS") for a in self.jwt_algorithm_list):
                keys.append("the shared secret SYNCD_JWT_SECRET")
            if self.jwt_jwks_url:
                keys.append(f"JWKS {_without_credentials(self.jwt_jwks_url)}")
            if self.jwt_jwks_file:
                keys.append(f"JWKS file {self.jwt_jwks_file}")
            text = (f"jwt, algorithms {', '.join(self.jwt_algorithm_list)}, "
                    f"issuer {self.jwt_issuer or '(any)'}, "
                    f"audience {self.jwt_audience or '(any)'}, keys from {' and '.join(keys)}")
        elif mode == "forward":
            text = f"forward to {_without_credentials(self.forward_url)}"
        else:
            text = "api-key"
        keys_count = len([k for k in self.api_keys.split(",") if k.strip()])
        if keys_count:
            text += f"; {keys_count} service key(s)"
        return text

    @property
    def cors_origin_list(self) -> tuple[str, ...]:
        """The allowed browser origins (``*``: any), as parsed from ``cors_origins``."""
        return tuple(item.strip() for item in self.cors_origins.split(",") if item.strip())


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address to bind) is reachable from this machine only."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def _refuse_unknown(env: Mapping[str, str]) -> None:
    """A misspelled setting must not be ignored: ``SYNCD_AUTHMODE=jwt`` would serve with no
    authentication at all."""
    known = ["SYNCD_" + f.name.upper() for f in fields(Settings)]
    unknown = sorted(name for name in env
                     if name.startswith("SYNCD_") and name not in known
                     and name not in NOT_SETTINGS)
    if not unknown:
        return
    described = []
    for name in unknown:
        # Compared without the prefix, which every name shares and would make anything close.
        close = difflib.get_close_matches(name[6:], [k[6:] for k in known], n=1, cutoff=0.6)
        described.append(f"{name} (did you mean SYNCD_{close[0]}?)" if close else name)
    raise ConfigError(
        f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(described)}; "
        "every SYNCD_* variable must be one of the settings listed in README.md (\"Settings\")"
    )


def _without_credentials(url: str) -> str:
    """``url`` without user, password, query and fragment (where tokens hide), for logs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an unreadable URL)"
    netloc = f"[{host}]{port}" if ":" in host else f"{host}{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _parse(name: str, type_name: str, raw: str) -> object:
    env_name = "SYNCD_" + name.upper()
    try:
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
        if type_name == "Path":
            return Path(raw)
        if type_name == "bool":
            return _boolean(raw)
    except ValueError:
        kind = {"int": "an integer", "float": "a number", "Path": "a path",
                "bool": "true or false"}[type_name]
        raise ConfigError(f"{env_name} must be {kind}, got {raw!r}") from None
    return raw


def _boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)
