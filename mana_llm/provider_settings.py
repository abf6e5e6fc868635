"""Where each provider lives: its deployments (several GPU boxes, several keys), read once from
the environment and the PROVIDERS_PATH file; a leaf, like settings.py which holds it.

A provider is one wire protocol under one name (`ollama`, `groq`, `vllm`); a deployment is one
place that serves it: a base URL and a key. `OLLAMA_URL` may list several URLs and each
cloud's key variable several keys (comma-separated): one deployment each, named
`<provider>-<n>`. The providers file may list them instead, each with a name, a weight and a
`max_in_flight`. One URL and one key is one deployment: exactly what the gateway did before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs
import yaml

from mana_llm.env_reader import EnvReader, SettingsError

ProviderKind = Literal["ollama", "openai"]
COLD_LOAD_S = 10.0  # what a model not loaded on an Ollama host costs before its first token


@attrs.frozen
class DeploymentSettings:
    """One place a provider is served from."""

    name: str  # in metrics, logs, /v1/health and X-Mana-LLM-Deployment
    base_url: str
    api_key: str | None = attrs.field(default=None, repr=False)
    weight: float = 1.0
    max_in_flight: int | None = None  # Ollama: its OLLAMA_NUM_PARALLEL; beyond it, it queues


@attrs.frozen
class ProviderSettings:
    """One provider: its wire protocol, its deployments and how long it may take."""

    name: str
    kind: ProviderKind
    base_url: str  # the first deployment's (messages that name one place)
    api_key: str | None = attrs.field(default=None, repr=False)  # the first deployment's
    key_env: str | None = None  # the variable that holds the key; None: keyless (local servers)
    url_env: str | None = None  # where base_url was set (a variable, or the providers file)
    timeout_s: float = 120.0
    headers: Mapping[str, str] = attrs.field(factory=dict)  # e.g. OpenRouter's X-Title
    models: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)  # Ollama per-model
    deployments: tuple[DeploymentSettings, ...] = ()  # () : one, from base_url and api_key
    cold_load_s: float = COLD_LOAD_S

    @property
    def configured(self) -> bool:
        return self.kind == "ollama" or self.key_env is None or bool(self.api_key)

    def places(self) -> tuple[DeploymentSettings, ...]:
        """Its deployments; a provider given one URL and one key has one."""
        if self.deployments:
            return self.deployments
        return (DeploymentSettings(f"{self.name}-1", self.base_url, self.api_key),)

    def at(self, deployment: DeploymentSettings) -> ProviderSettings:
        """This provider as one deployment serves it (its URL and key)."""
        return attrs.evolve(
            self, base_url=deployment.base_url, api_key=deployment.api_key, deployments=()
        )


# The built-in OpenAI-compatible clouds: name -> (official base URL, key variable, URL variable).
CLOUDS: tuple[tuple[str, str, str, str], ...] = (
    ("openrouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", "OPENROUTER_BASE_URL"),
    ("groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY", "GROQ_BASE_URL"),
    ("together", "https://api.together.xyz/v1", "TOGETHER_API_KEY", "TOGETHER_BASE_URL"),
)


def numbered(name: str, urls: list[str], keys: list[str | None]) -> tuple[DeploymentSettings, ...]:
    """`<provider>-<n>` deployments: one per URL, or one per key at the one URL."""
    if len(urls) > 1:
        return tuple(DeploymentSettings(f"{name}-{n}", url) for n, url in enumerate(urls, 1))
    return tuple(DeploymentSettings(f"{name}-{n}", urls[0], key) for n, key in enumerate(keys, 1))


def env_providers(read: EnvReader, env: Mapping[str, str]) -> list[ProviderSettings]:
    """Ollama and the built-in clouds, from their variables (comma lists: deployments)."""
    urls = [read.check_url("OLLAMA_URL", url) for url in read.csv("OLLAMA_URL")]
    urls = urls or ["http://localhost:11434"]
    providers = [
        ProviderSettings(
            name="ollama",
            kind="ollama",
            base_url=urls[0],
            url_env="OLLAMA_URL",
            timeout_s=read.seconds("OLLAMA_TIMEOUT", 120.0),
            deployments=numbered("ollama", urls, [None]),
        )
    ]
    cloud_timeout_s = read.seconds("CLOUD_TIMEOUT", 120.0)
    for name, url, key_env, url_env in CLOUDS:
        base_url = read.url(url_env, url)
        keys: list[str | None] = list(read.csv(key_env)) or [None]
        providers.append(
            ProviderSettings(
                name=name,
                kind="openai",
                base_url=base_url,
                api_key=keys[0],
                key_env=key_env,
                url_env=url_env,
                timeout_s=cloud_timeout_s,
                deployments=numbered(name, [base_url], keys),
            )
        )
    return providers


_PROVIDER_KEYS = frozenset(
    {"base_url", "api_key_env", "timeout_s", "headers", "deployments", "cold_load_s"}
)
_DEPLOYMENT_KEYS = frozenset({"name", "base_url", "api_key_env", "weight", "max_in_flight"})
Bad = Callable[[str], SettingsError]


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def apply_providers_file(
    providers: list[ProviderSettings],
    path: str,
    env: Mapping[str, str],
    read_text: Callable[[str], str] | None = None,
) -> list[ProviderSettings]:
    """PROVIDERS_PATH: extra OpenAI-compatible providers, deployments, extra headers and
    timeouts for the built-ins, and per-model Ollama defaults (num_ctx, keep_alive)."""

    def bad(message: str) -> SettingsError:
        return SettingsError(f"PROVIDERS_PATH={path!r}: {message}")

    try:
        data = yaml.safe_load((read_text or _read)(path)) or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise bad(f"cannot read it ({exc})") from None
    except yaml.YAMLError as exc:
        raise bad(f"not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or set(data) - {"providers", "ollama", "prices"}:
        raise bad("the top level takes 'providers', 'ollama' and 'prices' (access/prices.py)")
    listed = data.get("providers") or {}
    if not isinstance(listed, dict) or not isinstance(data.get("ollama") or {}, dict):
        raise bad("'providers' and 'ollama' must map names to their settings")
    by_name = {p.name: p for p in providers}
    for name, spec in listed.items():
        by_name[name] = _file_provider(str(name), spec, by_name.get(name), env, bad)
    models = (data.get("ollama") or {}).get("models") or {}
    if not isinstance(models, dict) or not all(isinstance(m, dict) for m in models.values()):
        raise bad("ollama.models must map model names to their options")
    by_name["ollama"] = attrs.evolve(
        by_name["ollama"], models={str(k): v for k, v in models.items()}
    )
    names = [d.name for p in by_name.values() for d in p.places()]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise bad(f"deployment names must be unique: {', '.join(twice)} is used twice")
    return list(by_name.values())


def _file_provider(
    name: str, spec: Any, old: ProviderSettings | None, env: Mapping[str, str], bad: Bad
) -> ProviderSettings:
    """One entry of the providers file: a new OpenAI-compatible provider, or extra headers,
    a timeout and deployments for a built-in one (`old`)."""
    if not isinstance(spec, dict) or set(spec) - _PROVIDER_KEYS:
        raise bad(f"provider {name!r} takes {', '.join(sorted(_PROVIDER_KEYS))}")
    headers = spec.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise bad(f"the headers of {name!r} must map names to strings")
    timeout = _positive(spec.get("timeout_s"), f"the timeout_s of {name!r}", bad)
    cold_load_s = _positive(spec.get("cold_load_s"), f"the cold_load_s of {name!r}", bad)
    if old is not None:  # a built-in: its URL and key stay in the environment...
        if "base_url" in spec or "api_key_env" in spec:
            raise bad(f"{name!r} is built in: set its URL and key in the environment")
        provider = attrs.evolve(
            old,
            headers={**old.headers, **headers},
            timeout_s=timeout or old.timeout_s,
            cold_load_s=cold_load_s or old.cold_load_s,
        )
    else:
        provider = _new_provider(name, spec, env, headers, timeout, cold_load_s, bad)
    if "deployments" not in spec:  # ...unless the file lists its deployments
        return provider
    deployments = _deployments(name, spec["deployments"], provider, env, bad)
    first = deployments[0]
    return attrs.evolve(
        provider,
        base_url=first.base_url,
        api_key=first.api_key,
        url_env=f"providers.{name}.deployments in PROVIDERS_PATH",
        deployments=deployments,
    )


def _new_provider(
    name: str,
    spec: dict[str, Any],
    env: Mapping[str, str],
    headers: dict[str, str],
    timeout: float | None,
    cold_load_s: float | None,
    bad: Bad,
) -> ProviderSettings:
    url = spec.get("base_url")
    if url is None and spec.get("deployments"):
        url = (spec["deployments"][0] or {}).get("base_url")  # the first deployment's
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise bad(f"provider {name!r} needs a base_url (http:// or https://)")
    if "/" in name or name == "mana":
        raise bad(f"provider name {name!r} cannot contain '/' or be 'mana'")
    key_env = spec.get("api_key_env")
    raw = env.get(key_env, "") if isinstance(key_env, str) else ""
    keys: list[str | None] = [k.strip() for k in raw.split(",") if k.strip()] or [None]
    return ProviderSettings(
        name=name,
        kind="openai",
        base_url=url.rstrip("/"),
        api_key=keys[0],
        key_env=key_env if isinstance(key_env, str) else None,
        url_env=f"providers.{name}.base_url in PROVIDERS_PATH",
        timeout_s=float(timeout or 120.0),
        headers=headers,
        cold_load_s=float(cold_load_s or COLD_LOAD_S),
        deployments=numbered(name, [url.rstrip("/")], keys),  # a key list: one per key
    )


def _deployments(
    name: str, given: Any, provider: ProviderSettings, env: Mapping[str, str], bad: Bad
) -> tuple[DeploymentSettings, ...]:
    """`deployments:` of one provider: each a base_url and/or an api_key_env (the provider's
    own where left out), an optional name, weight and max_in_flight."""
    if not isinstance(given, list) or not given:
        raise bad(f"the deployments of {name!r} must be a list of one or more")
    found = []
    for n, spec in enumerate(given, 1):
        where = f"deployment {n} of {name!r}"
        if not isinstance(spec, dict) or set(spec) - _DEPLOYMENT_KEYS:
            raise bad(f"{where} takes {', '.join(sorted(_DEPLOYMENT_KEYS))}")
        url = spec.get("base_url", provider.base_url)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise bad(f"the base_url of {where} must be an http:// or https:// URL")
        key = provider.api_key
        key_env = spec.get("api_key_env")
        if key_env is not None:
            if not isinstance(key_env, str) or not env.get(key_env, "").strip():
                raise bad(f"the api_key_env of {where} names no variable that is set")
            key = env[key_env].strip()
        label = spec.get("name", f"{name}-{n}")
        if not isinstance(label, str) or not label or "/" in label or len(label) > 64:
            raise bad(f"the name of {where} must be 1 to 64 characters without '/'")
        weight = _positive(spec.get("weight"), f"the weight of {where}", bad) or 1.0
        limit = spec.get("max_in_flight")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise bad(f"the max_in_flight of {where} must be a whole number from 1")
        found.append(DeploymentSettings(label, url.rstrip("/"), key, float(weight), limit))
    return tuple(found)


def _positive(value: Any, what: str, bad: Bad) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise bad(f"{what} must be a positive number")
    return float(value)
