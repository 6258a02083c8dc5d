"""The script rule: quoted lines, their speakers (<<<voice_n>>>) and languages."""

from __future__ import annotations

import pytest

from kinema.errors import InvalidRequest
from kinema.voices.script import Line, language_of, parse_script

pytestmark = pytest.mark.unit


def test_a_prompt_without_quotes_has_no_lines() -> None:
    assert parse_script("a cat walks in the park at dusk", 0) == []
    assert parse_script("<<<voice_1>>> walks in, smiling", 1) == []  # a marker, no line


def test_two_speakers_in_order() -> None:
    prompt = (
        '<<<voice_1>>> looks up and says "Are you coming?" '
        '<<<voice_2>>>: "Give me a minute." They both laugh.'
    )
    assert parse_script(prompt, 2) == [
        Line("Are you coming?", 1, "en"),
        Line("Give me a minute.", 2, "en"),
    ]


def test_chinese_quotes_and_text() -> None:
    prompt = '<<<voice_1>>>说：“你好，今天天气很好。” <<<voice_2>>>回答「是啊」 then "OK"'
    assert parse_script(prompt, 2) == [
        Line("你好，今天天气很好。", 1, "zh"),
        Line("是啊", 2, "zh"),
        Line("OK", None, "en"),
    ]


def test_language_is_zh_only_with_an_ideograph() -> None:
    assert language_of("Hello 世界") == "zh"
    assert language_of("こんにちは") == "en"  # kana alone is no ideograph: en by the rule
    assert language_of("Ünïcödé, 123!") == "en"


def test_a_marker_speaks_only_the_next_line() -> None:
    prompt = '<<<voice_1>>> "one" "two"'
    assert parse_script(prompt, 1) == [Line("one", 1, "en"), Line("two", None, "en")]


def test_a_marker_with_no_quote_after_it_names_without_speaking() -> None:
    prompt = '<<<voice_1>>> enters. <<<voice_2>>> whispers "Hide."'
    assert parse_script(prompt, 2) == [Line("Hide.", 2, "en")]
    assert parse_script('"Hi" says <<<voice_1>>>', 1) == [Line("Hi", None, "en")]


def test_a_quote_without_a_marker_is_the_engines_own_voice() -> None:
    assert parse_script('a narrator says "Once upon a time"', 2) == [
        Line("Once upon a time", None, "en")
    ]


def test_unclosed_and_empty_quotes_are_no_lines() -> None:
    assert parse_script('a "   " pause, then "never closed', 1) == []
    assert parse_script("“open only", 1) == []


@pytest.mark.parametrize(
    ("prompt", "voices", "needle"),
    [
        ('<<<voice_3>>> "hi"', 2, "<<<voice_3>>> names voice 3, but only 2 voice_ids"),
        ('<<<voice_1>>> "hi"', 0, "<<<voice_1>>> names voice 1, but no voice_ids are given"),
        ('<<<voice_0>>> "hi"', 2, "<<<voice_0>>> names voice 0"),
        ('<<<voice_99999999999>>> "hi"', 2, "names voice 99999999999"),
        ('"<<<voice_1>>> hi"', 1, "<<<voice_1>>> is inside a quoted line"),
    ],
)
def test_bad_markers_are_400_naming_them(prompt: str, voices: int, needle: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_script(prompt, voices, field="multi_prompt[1].prompt")
    assert raised.value.status_code == 400
    assert raised.value.message.startswith("multi_prompt[1].prompt: ")
    assert needle in raised.value.message
