"""The ``shelflife`` command as a user runs it (a subprocess), and a config file for it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.apps import AppTable

SHELFLIFE = str(Path(sys.executable).parent / "shelflife")


def shelflife(
    *args: str, cwd: Path, env: dict[str, str] | None = None, user: str | None = None
) -> subprocess.CompletedProcess[str]:
    command = [SHELFLIFE, *args]
    if user:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "SHELFLIFE_"))
    }
    environment.update(env or {})
    result = subprocess.run(
        command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=120, check=False
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def write_config(
    tmp_path: Path,
    app: AppTable,
    *,
    rules: str = "",
    extra: str = "",
    on_expire: str = "block",
    reference: str = "",
) -> Path:
    (tmp_path / "outputs").mkdir(exist_ok=True)
    config = tmp_path / "shelflife.toml"
    config.write_text(f"""
[catalog]
url = "sqlite:///catalog.db"
[databases.app]
url = "{app.url}"
[tiers.local]
url = "file://outputs"
create = true
ref_format = "data/storage/outputs/{{key}}"
ref_aliases = ["/workspace/outputs/{{key}}"]
[[references]]
database = "app"
table = "{app.name}"
column = "path"
on_expire = "{on_expire}"
{reference}
{rules}
{extra}
""")
    return config
