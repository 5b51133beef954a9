"""Settings, resolved once at start-up from an environment mapping (never at import).

Order of precedence: explicit argument, then the environment, then the default. A provider is
enabled when its API key is set; ``local`` is always available.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import errors, store_url
from .catalog import PROVIDERS, REAL_PROVIDERS

WAIT_DEFAULT_S = 20.0
WAIT_MAX_S = 50.0


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    api_key: str | None = field(repr=False)
    base_url: str | None
    extra_urls: dict[str, str] = field(default_factory=dict)
    credentials: dict[str, str] = field(default_factory=dict, repr=False)  # env var -> value (credential_sets)

    @property
    def configured(self) -> bool:
        sets = PROVIDERS[self.name].credential_sets if self.name in PROVIDERS else ()
        complete = any(all(var in self.credentials for var in group) for group in sets)
        return self.name == "local" or bool(self.api_key) or complete


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    providers: dict[str, ProviderConfig]
    default_provider: str = "auto"
    poll_interval_s: float | None = None  # None: start from the variant's typical time
    poll_max_interval_s: float = 30.0
    max_job_cost_usd: float | None = None
    daily_budget_usd: float | None = None
    confirm_above_usd: float | None = None  # quotes above it need the user's confirmation
    allowed_dirs: tuple[Path, ...] = ()
    http_token: str | None = field(default=None, repr=False)
    job_deadline_s: float = 3600.0
    max_consecutive_errors: int = 6
    max_download_bytes: int = 2 * 1024**3
    store_url: str | None = field(default=None, repr=False)  # None: diskcache under data_dir
    lease_s: float = 30.0  # a dead process's jobs are taken over within this many seconds
    request_state_keys: tuple[str, ...] = field(default=(), repr=False)  # shared by replicas; first seals

    @property
    def configured(self) -> list[str]:
        """Real providers with a key, in catalog order."""
        return [n for n in REAL_PROVIDERS if self.providers[n].configured]

    @property
    def offered(self) -> list[str]:
        """What the ``provider`` argument offers: the configured providers and ``local``."""
        return [*self.configured, "local"]

    def secrets(self) -> tuple[str, ...]:
        keys = tuple(p.api_key for p in self.providers.values() if p.api_key)
        keys += tuple(value for p in self.providers.values() for value in p.credentials.values())
        return keys + tuple(
            s for s in (self.http_token, *store_url.secrets_of(self.store_url), *self.request_state_keys) if s
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if env is None else env
        providers: dict[str, ProviderConfig] = {}
        for name, entry in PROVIDERS.items():
            key = (env.get(entry.env_key) or "").strip() or None if entry.env_key else None
            base = (env.get(entry.base_url_env) or "").strip() if entry.base_url_env else ""
            extra = {var: (env.get(var) or "").strip() or default for var, default in entry.extra_env.items()}
            creds = {var: (env.get(var) or "").strip() for group in entry.credential_sets for var in group}
            providers[name] = ProviderConfig(
                name,
                None if entry.credential_sets else key,
                (base or entry.default_base_url or "").rstrip("/") or None,
                extra,
                {var: value for var, value in creds.items() if value},
            )
        default_provider = (env.get("KLING_MCP_DEFAULT_PROVIDER") or "auto").strip().lower()
        if default_provider != "auto" and default_provider not in PROVIDERS:
            raise errors.InvalidRequest(
                f"KLING_MCP_DEFAULT_PROVIDER={default_provider!r} is not a provider.",
                hint=f"Use auto or one of: {', '.join(PROVIDERS)}.",
            )
        values: dict[str, object] = dict(
            data_dir=_data_dir(env),
            providers=providers,
            default_provider=default_provider,
            poll_interval_s=_float(env, "KLING_MCP_POLL_INTERVAL_S"),
            poll_max_interval_s=_float(env, "KLING_MCP_POLL_MAX_INTERVAL_S") or 30.0,
            max_job_cost_usd=_float(env, "KLING_MCP_MAX_JOB_COST_USD"),
            daily_budget_usd=_float(env, "KLING_MCP_DAILY_BUDGET_USD"),
            confirm_above_usd=_float(env, "KLING_MCP_CONFIRM_ABOVE_USD"),
            allowed_dirs=tuple(
                Path(p).expanduser().resolve()
                for p in (env.get("KLING_MCP_ALLOWED_DIRS") or "").split(os.pathsep)
                if p.strip()
            ),
            http_token=(env.get("KLING_MCP_HTTP_TOKEN") or "").strip() or None,
        )
        values["store_url"] = store_url.parse(env.get("KLING_MCP_STORE_URL"))
        values["request_state_keys"] = _request_state_keys(env)
        lease = _float(env, "KLING_MCP_LEASE_S")
        if lease:
            values["lease_s"] = lease
        deadline = _float(env, "KLING_MCP_JOB_DEADLINE_S")
        if deadline:
            values["job_deadline_s"] = deadline
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def _float(env: Mapping[str, str], name: str) -> float | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise errors.InvalidRequest(
            f"{name}={raw!r} is not a number.", hint=f"Set {name} to a number, e.g. 5."
        ) from None
    if value < 0:
        raise errors.InvalidRequest(f"{name}={raw!r} is negative.", hint=f"Set {name} to a positive number.")
    return value


def _request_state_keys(env: Mapping[str, str]) -> tuple[str, ...]:
    """``KLING_MCP_REQUEST_STATE_KEYS``: comma-separated secrets (the first seals, every one unseals)."""
    name = "KLING_MCP_REQUEST_STATE_KEYS"
    keys = tuple(k.strip() for k in (env.get(name) or "").split(",") if k.strip())
    for n, key in enumerate(keys, 1):
        if len(key.encode()) < 32:
            raise errors.InvalidRequest(
                f"{name}: key {n} is {len(key.encode())} bytes; each key needs at least 32 bytes of randomness.",
                hint=f'Generate one with: python -c "import secrets; print(secrets.token_hex(32))" and set {name}.',
            )
    return keys


def _data_dir(env: Mapping[str, str]) -> Path:
    raw = (env.get("KLING_MCP_DATA_DIR") or "").strip()
    if raw:
        return Path(raw).expanduser().resolve()
    from platformdirs import user_data_dir

    return Path(user_data_dir("kling-mcp", appauthor=False)).resolve()
