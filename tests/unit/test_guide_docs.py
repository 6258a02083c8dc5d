"""docs/guide.md, the user guide: it covers each way in, its Python examples compile and use
only what the SDK exports, its commands are real ``kinema`` commands, its links resolve; and
the user docs read as a description of the code, not as a development log."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from kinema.cli import main

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
GUIDE = (DOCS / "guide.md").read_text()


def test_the_guide_covers_every_way_in() -> None:
    for topic in (
        "kinema keys create",
        "kinema serve",
        "POST /v1/{slug}",
        "POST /v2/{slug}",
        "/status",
        "/events",
        '"webhook"',
        "webhooks.verify",
        "from kinema.client import",
        "kinema i2v",
        "kinema i2i",
        "/playground",
    ):
        assert topic in GUIDE, topic


def test_the_guides_python_compiles_and_imports_only_what_the_sdk_exports() -> None:
    blocks = re.findall(r"```python\n(.*?)```", GUIDE, re.S)
    assert len(blocks) >= 2
    for block in blocks:
        compile(block, "docs/guide.md", "exec")
        for names in re.findall(r"from kinema\.client import (.+)", block):
            for name in (n.strip() for n in names.split(",")):
                # What the statement itself would do: a name, or a submodule (webhooks).
                namespace: dict[str, object] = {}
                exec(f"from kinema.client import {name}", namespace)  # noqa: S102
                assert name in namespace, name


def test_the_guides_kinema_commands_exist() -> None:
    lines = [
        line.split("#")[0].strip()
        for block in re.findall(r"```bash\n(.*?)```", GUIDE, re.S)
        for line in block.splitlines()
    ]
    used = [shlex.split(line.split("$(", 1)[-1].rstrip(")")) for line in lines if "kinema " in line]
    assert len(used) >= 8
    for words in used:
        words = words[words.index("kinema") + 1 :]
        command = main.commands[words[0]]
        if hasattr(command, "commands"):
            assert words[1] in command.commands, words


def test_the_guides_links_resolve() -> None:
    for target in re.findall(r"\]\(([a-z]+\.md)(?:#[^)]*)?\)", GUIDE):
        assert (DOCS / target).exists(), target


@pytest.mark.parametrize("doc", sorted(p.name for p in DOCS.glob("*.md")))
def test_user_docs_carry_no_development_log(doc: str) -> None:
    text = (DOCS / doc).read_text()
    literal = ("what was done", "before the fix", "(was:", "(was ")
    for phrase in (r"\bsession \d", r"\bthis session\b", *map(re.escape, literal)):
        assert not re.search(phrase, text, re.I), f"{doc}: {phrase}"
