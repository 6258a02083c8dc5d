"""docs/deploy.md and deploy/ held to the code: every settings example there is a valid
Settings, every file it links exists, the systemd unit runs real CLI commands, and the images
install extras the project defines."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

from kinema.cli import main
from kinema.settings import Settings

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
DEPLOY_MD = (ROOT / "docs/deploy.md").read_text()


def _toml_examples() -> list[str]:
    fenced = re.findall(r"```toml\n(.*?)```", DEPLOY_MD, flags=re.S)
    heredocs = re.findall(r"<<'TOML'\n(.*?)\nTOML\n", DEPLOY_MD, flags=re.S)
    return fenced + heredocs


def test_there_are_examples_for_each_layout() -> None:
    examples = [tomllib.loads(text) for text in _toml_examples()]
    assert any("engines" in e and "pools" in e["engines"] for e in examples)  # multi-GPU
    cluster = [e for e in examples if e.get("runner", {}).get("backend") == "ray"]
    assert len(cluster) == 2  # the cluster's file and its one-machine twin
    for e in cluster:
        assert e["storage"]["backend"] == "s3"
        assert e["database"]["url"].startswith("postgresql+asyncpg://")
        assert e["rate_limit"]["storage_url"].startswith("redis://")


@pytest.mark.parametrize("text", _toml_examples())
def test_every_settings_example_is_valid(text: str, tmp_path: Path) -> None:
    values = tomllib.loads(text)
    values.setdefault("data_dir", tmp_path)
    Settings(**values)


def test_every_linked_file_exists() -> None:
    links = re.findall(r"\]\(\.\./([^)#]+)\)", DEPLOY_MD)
    assert links
    for link in links:
        assert (ROOT / link).is_file(), link


def test_the_systemd_unit_runs_real_commands() -> None:
    unit = (ROOT / "deploy/kinema.service").read_text()
    lines = re.findall(r"^Exec\w+=(.*)$", unit, flags=re.M)
    assert len(lines) == 2
    for line in lines:
        words = shlex.split(line)
        assert words[0].endswith("/kinema")
        assert words[1:3] == ["--config", "/etc/kinema/kinema.toml"]
        command = main.commands[words[3]]  # type: ignore[attr-defined]
        options = {opt for param in command.params for opt in getattr(param, "opts", [])}
        assert {w for w in words[4:] if w.startswith("--")} <= options


def test_the_images_install_extras_the_project_defines() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = set(pyproject["project"]["optional-dependencies"])
    for name in ("Dockerfile", "Dockerfile.gpu"):
        text = (ROOT / "deploy" / name).read_text()
        wanted = re.findall(r'"\.\[([a-z0-9,]+)\]"', text)
        assert wanted, name
        for group in wanted:
            assert set(group.split(",")) <= extras, (name, group)


def test_the_rayservice_declares_every_pool_with_the_builder(tmp_path: Path) -> None:
    import yaml

    documents = list(yaml.safe_load_all((ROOT / "deploy/kuberay.yaml").read_text()))
    service = next(d for d in documents if d["kind"] == "RayService")
    serve = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert serve["proxy_location"] == "Disabled"
    from kinema.runners import ray_deploy

    names = set()
    for app in serve["applications"]:
        module, _, attr = app["import_path"].partition(":")
        assert module == ray_deploy.__name__ and callable(getattr(ray_deploy, attr))
        names.add(app["name"])
        assert app["name"] == f"kinema-{app['args']['pool']}"
    settings = Settings(data_dir=tmp_path, engines={"preset": "static"})
    assert names == {app.name for app in ray_deploy.pool_apps(settings)}
    api = next(d for d in documents if d["kind"] == "Deployment")
    probe = api["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["httpGet"]["path"] == "/readyz"
