"""Finding, reading and validating configuration.

Order: ``--config PATH``, then ``$SHELFLIFE_CONFIG``, then ``./shelflife.toml``; with none,
the seed-compatible ``STORAGE_*`` environment when one of its variables is set
(:data:`shelflife.config.compat.SWITCHES`), else the embedded default. Values may use
``${VAR}`` (``${VAR:-fallback}``); a secret may come from a file named by
``<field>_file``. ``file://rel`` and ``sqlite:///rel.db`` are relative to the config
file's folder (the working directory for the embedded default and environment).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shelflife.config.model import Config
from shelflife.errors import ConfigError

CONFIG_ENV = "SHELFLIFE_CONFIG"
DEFAULT_FILE = "shelflife.toml"
SECRET_FIELDS = frozenset({"access_key", "secret_key", "session_token", "url", "token"})
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_config(
    path: str | Path | None = None, *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Config:
    """Find and validate the configuration; raise ConfigError with the field's path."""
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    if path is None and env.get(CONFIG_ENV):
        path = env[CONFIG_ENV]
    if path is None and (cwd / DEFAULT_FILE).is_file():
        path = cwd / DEFAULT_FILE
    if path is not None:
        file = Path(path)
        if not file.is_absolute():
            file = cwd / file
        return parse_config(_read_toml(file), base_dir=file.parent, source=str(file), env=env)
    from shelflife.config.compat import selects_environment

    if selects_environment(env):
        from shelflife.config.compat import seed_environment, seed_environment_config

        raw = seed_environment_config(env)
        return parse_config(
            raw,
            base_dir=cwd,
            source="STORAGE_* environment",
            env=env,
            environment=seed_environment(env),
        )
    return parse_config(embedded_default(), base_dir=cwd, source="embedded default", env=env)


def embedded_default() -> dict[str, Any]:
    """The configuration used when there is no file: two local folders, one safe rule."""
    return {
        "catalog": {"url": "sqlite:///data/shelflife.db"},
        "tiers": {
            "local": {
                "url": "file://data/storage/outputs",
                "ref_format": "data/storage/outputs/{key}",
                "create": True,
                "capacity": "disk",
                "high_watermark": "80%",
                "low_watermark": "70%",
            },
            "cloud": {
                "url": "file://data/storage/cold",
                "ref_format": "data/storage/cold/{key}",
                "create": True,
            },
        },
        "rules": [
            {
                "id": "keep-local-under-watermark",
                "tier": "local",
                "action": "migrate",
                "to": "cloud",
                "when": "over-watermark",
                "order": "oldest",
            }
        ],
    }


def parse_config(
    raw: dict[str, Any],
    *,
    base_dir: Path,
    source: str,
    env: Mapping[str, str] | None = None,
    environment: dict[str, Any] | None = None,
) -> Config:
    """Validate a raw TOML table: substitute variables, read secret files, resolve paths
    (``environment``: what the ``STORAGE_*`` environment said beyond the tables)."""
    env = os.environ if env is None else env
    data = _substitute(raw, env, "")
    data = _read_secret_files(data, base_dir, "")
    _resolve_paths(data, base_dir)
    fixed = {"source": source, "base_dir": base_dir, "environment": environment}
    try:
        config = Config.model_validate({**data, **fixed})
    except ValidationError as exc:
        raise _config_error(exc, source, data) from None
    _register_secrets(config)
    return config


def _register_secrets(config: Config) -> None:
    """Tell the log filter every secret value, so that none is ever written."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from shelflife.base.logs import register_secret
    from shelflife.base.urls import url_secrets

    for tier in config.tiers.values():
        for secret in (tier.secret_key, tier.session_token):  # access key ids are no secret
            if secret is not None:
                register_secret(secret.get_secret_value())
    for target in config.notify:  # a webhook's URL and headers may each hold a token
        for part in url_secrets(target.url.get_secret_value()):
            register_secret(part)
        for header in target.headers.values():
            register_secret(header.get_secret_value())
    urls = [db.url.get_secret_value() for db in config.databases.values()]
    for url in [*urls, config.catalog.url]:
        try:
            password = make_url(url).password
        except ArgumentError:
            continue
        if password:
            register_secret(str(password))


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {file} does not exist",
            hint="run 'shelflife init' to write a starter file, or pass --config PATH",
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {file} is not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}") from None


def _substitute(value: Any, env: Mapping[str, str], path: str) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, env, _join(path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, fallback = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if fallback is not None:
            return fallback
        raise ConfigError(
            f"environment variable {name} is not set",
            path=path,
            hint=f"export {name}=…, or write ${{{name}:-default}} in the file",
        )

    return _VAR_RE.sub(replace, value)


def _read_secret_files(value: Any, base_dir: Path, path: str) -> Any:
    if isinstance(value, list):
        return [_read_secret_files(v, base_dir, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    result: dict[str, Any] = {}
    for key, item in value.items():
        field = key.removesuffix("_file")
        if key.endswith("_file") and field in SECRET_FIELDS:
            if field in value:
                raise ConfigError(
                    f"both {field} and {key} are set; keep one", path=_join(path, key)
                )
            result[field] = _read_secret(item, base_dir, _join(path, key))
        else:
            result[key] = _read_secret_files(item, base_dir, _join(path, key))
    return result


def _read_secret(name: Any, base_dir: Path, path: str) -> str:
    if not isinstance(name, str):
        raise ConfigError("must be the path of a file holding the secret", path=path)
    file = Path(name) if Path(name).is_absolute() else base_dir / name
    try:
        return file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read secret file {file}: {exc.strerror}", path=path) from None


def _resolve_paths(data: dict[str, Any], base_dir: Path) -> None:
    for tier in (data.get("tiers") or {}).values():
        if isinstance(tier, dict) and isinstance(tier.get("url"), str):
            tier["url"] = resolve_file_url(tier["url"], base_dir)
    catalog = data.get("catalog")
    if isinstance(catalog, dict) and isinstance(catalog.get("url"), str):
        catalog["url"] = resolve_sqlite_url(catalog["url"], base_dir)
    for database in (data.get("databases") or {}).values():
        if isinstance(database, dict) and isinstance(database.get("url"), str):
            database["url"] = resolve_sqlite_url(database["url"], base_dir)


def resolve_file_url(url: str, base_dir: Path) -> str:
    """``file://rel/path`` → ``file:///abs/base/rel/path``; absolute URLs are unchanged."""
    if not url.startswith("file://"):
        return url
    rest = url.removeprefix("file://")
    if rest.startswith("/"):
        return url
    return "file://" + str((base_dir / rest).resolve())


def resolve_sqlite_url(url: str, base_dir: Path) -> str:
    """``sqlite:///rel.db`` → ``sqlite:////abs/base/rel.db``; memory and absolute unchanged."""
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if url.startswith(prefix):
            rest = url.removeprefix(prefix)
            if not rest or rest.startswith("/") or rest.startswith(":memory:"):
                return url
            return prefix + str((base_dir / rest).resolve())
    return url


def _config_error(
    exc: ValidationError, source: str, data: dict[str, Any] | None = None
) -> ConfigError:
    lines = []
    first_path = ""
    rules = (data or {}).get("rules")
    for detail in exc.errors():
        location = ""
        for depth, part in enumerate(detail["loc"]):
            if isinstance(part, int):
                location += f"[{part}]"
                if depth == 1 and detail["loc"][0] == "rules" and isinstance(rules, list):
                    rule = rules[part] if part < len(rules) else None
                    if isinstance(rule, dict) and rule.get("id"):
                        location += f" (id {rule['id']!r})"
            elif not _is_pydantic_tag(part):
                location = _join(location, part)
        message = detail["msg"].removeprefix("Value error, ")
        if detail["type"] == "extra_forbidden":
            message = "unknown key (check its spelling; see 'shelflife init' for every option)"
        elif detail["type"] == "missing":
            message = "required but missing"
        first_path = first_path or location
        lines.append(f"{location}: {message}" if location else message)
    text = "\n  ".join(lines)
    for secret in _secret_values(data or {}):  # a value echoed by a validator stays hidden
        text = text.replace(secret, "***")
    error = ConfigError(
        f"invalid configuration in {source}:\n  " + text,
        hint="fix the fields named above, then run 'shelflife check'",
    )
    error.path = first_path
    return error


_SECRET_FIELDS = {"secret_key", "session_token", "access_token", "password", "token", "hash"}


def _secret_values(data: Any) -> set[str]:
    """Every string a secret field of the raw config holds, and the password of every URL."""
    from urllib.parse import urlsplit

    found: set[str] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            if key in _SECRET_FIELDS and isinstance(value, str) and len(value) >= 4:
                found.add(value)
            found |= _secret_values(value)
    elif isinstance(data, list):
        for value in data:
            found |= _secret_values(value)
    elif isinstance(data, str) and "@" in data:
        try:
            password = urlsplit(data).password
        except ValueError:
            password = None
        if password and len(password) >= 4:
            found.add(password)
    return found


def _is_pydantic_tag(part: str) -> bool:
    """Union members and validator wrappers appear in error locations; they are no field."""
    return "[" in part or part in {"int", "str", "float", "bool", "literal", "none"}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
