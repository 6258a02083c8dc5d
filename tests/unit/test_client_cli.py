"""The generation CLI's own parsing and wording (the commands end to end are in
tests/integration/test_client.py)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from kinema import __version__
from kinema.cli import main
from kinema.client import Element, Progress, Shot
from kinema.client.cli import describe, parse_element, parse_shot

pytestmark = pytest.mark.unit


def test_an_element_is_a_frontal_and_its_references_data_uris_included() -> None:
    assert parse_element("a.png") == Element("a.png", [])
    assert parse_element("a.png,b.png,c.png") == Element("a.png", ["b.png", "c.png"])
    uri = "data:image/png;base64,AAAA"
    assert parse_element(f"{uri},b.png,{uri}") == Element(uri, ["b.png", uri])
    with pytest.raises(click.BadParameter):
        parse_element(",b.png")


def test_a_shot_is_seconds_and_a_prompt() -> None:
    assert parse_shot("3:a boat: sailing") == Shot("a boat: sailing", 3)
    for bad in ("a boat", "x:a boat", "-1:a"):
        with pytest.raises(click.BadParameter):
            parse_shot(bad)


def test_progress_lines() -> None:
    assert describe(Progress("r", "QUEUED", queue_position=2)) == "queued, 2 ahead"
    assert describe(Progress("r", "QUEUED")) == "queued"
    assert describe(Progress("r", "PROCESSING", progress=0.3)) == "generating"
    running = Progress("r", "PROCESSING", phase="encode", phase_progress=0.25)
    assert describe(running) == "generating: encode 25%"
    assert describe(Progress("r", "FAILED", error="cancelled")) == "failed: cancelled"
    assert describe(Progress("r", "COMPLETED")) == "completed"


def test_version_and_a_missing_key() -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["--version"]).output == f"kinema {__version__}\n"
    result = runner.invoke(main, ["status", "abc"], env={"KINEMA_KEY": ""})
    assert result.exit_code == 2 and "no API key" in result.output
