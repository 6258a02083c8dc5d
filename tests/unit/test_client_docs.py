"""Docs held to the code: every CLI command is in the docs, every option of the generation
commands and every public name and method of the SDK in docs/client.md."""

from __future__ import annotations

import inspect
from pathlib import Path

import click
import pytest

import kinema.client
from kinema.cli import main
from kinema.client import cli as client_cli
from kinema.client import webhooks

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
CLIENT_DOC = (ROOT / "docs" / "client.md").read_text()
ALL_DOCS = "\n".join(p.read_text() for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")])


def _commands(group: click.Group, prefix: str = "kinema") -> list[str]:
    paths = []
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        paths += _commands(command, path) if isinstance(command, click.Group) else [path]
    return paths


def test_every_cli_command_is_documented() -> None:
    missing = [path for path in _commands(main) if path not in ALL_DOCS]
    assert not missing, f"CLI commands missing from README.md and docs/: {missing}"
    assert "kinema --version" in CLIENT_DOC


def test_every_option_of_the_client_commands_is_in_docs_client() -> None:
    missing = [
        f"{command.name} {option}"
        for command in client_cli.COMMANDS
        for param in command.params
        if isinstance(param, click.Option)
        for option in param.opts
        if option.startswith("--") and f"`{option}" not in CLIENT_DOC
    ]
    assert not missing, f"options missing from docs/client.md: {missing}"


def _public_methods(cls: type) -> list[str]:
    return [
        name
        for name, member in vars(cls).items()
        if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, property))
    ]


def test_every_public_sdk_name_and_method_is_in_docs_client() -> None:
    missing = [name for name in kinema.client.__all__ if f"`{name}" not in CLIENT_DOC]
    for name in kinema.client.__all__:
        obj = getattr(kinema.client, name)
        if inspect.isclass(obj) and not issubclass(obj, Exception):
            missing += [
                f"{name}.{method}"
                for method in _public_methods(obj)
                if f"`{method}" not in CLIENT_DOC and f".{method}(" not in CLIENT_DOC
            ]
    missing += [name for name in ("webhooks.verify(", "`tolerance_s`") if name not in CLIENT_DOC]
    assert not missing, f"SDK names missing from docs/client.md: {missing}"
    assert webhooks.verify.__name__ == "verify"


def test_the_readme_examples_need_no_internet_and_show_errors() -> None:
    from PIL import Image

    readme = (ROOT / "README.md").read_text()
    sample = ROOT / "examples" / "sample.png"
    assert "examples/sample.png" in readme and sample.stat().st_size < 10_000
    with Image.open(sample) as img:
        assert img.format == "PNG"
    curls = [line for line in readme.splitlines() if line.lstrip().startswith("curl ")]
    assert curls and all("--fail-with-body" in line for line in curls), curls
    assert "https://example.com/" not in readme
