"""shot_type intelligence: the documented splitting rule."""

from __future__ import annotations

import pytest

from kinema.engines.plan import split_prompt

pytestmark = pytest.mark.unit


def test_single_piece_stays_one_shot() -> None:
    assert split_prompt("a cat yawns on a sofa", 5) == [("a cat yawns on a sofa", 5)]


def test_explicit_cues_win_over_sentences() -> None:
    shots = split_prompt("Shot 1: a wide street. Rain falls. Shot 2: a close-up of a face", 6)
    assert [p for p, _ in shots] == ["a wide street. Rain falls.", "a close-up of a face"]
    assert sum(s for _, s in shots) == 6
    assert [p for p, _ in split_prompt("sunrise [cut] a bird takes off", 4)] == [
        "sunrise",
        "a bird takes off",
    ]
    assert len(split_prompt("door opens. CUT TO: a hallway", 4)) == 2


def test_sentences_and_then_split() -> None:
    shots = split_prompt("A car stops. The driver steps out, then she looks up", 9)
    assert [p for p, _ in shots] == ["A car stops.", "The driver steps out", "she looks up"]
    assert sum(s for _, s in shots) == 9 and all(s >= 1 for _, s in shots)


def test_at_most_five_shots_and_one_per_second() -> None:
    prompt = "One. Two. Three. Four. Five. Six. Seven."
    shots = split_prompt(prompt, 15)
    assert len(shots) == 5 and shots[-1][0] == "Five. Six. Seven."
    assert sum(s for _, s in shots) == 15
    short = split_prompt(prompt, 3)
    assert len(short) == 3 and [s for _, s in short] == [1, 1, 1]


@pytest.mark.parametrize("duration", range(3, 16))
def test_seconds_always_add_up_exactly(duration: int) -> None:
    shots = split_prompt("A. Bb bb. Ccc ccc ccc. Dddd dddd dddd dddd.", duration)
    assert sum(s for _, s in shots) == duration
    assert all(s >= 1 for _, s in shots)


def test_longer_text_gets_more_time() -> None:
    shots = split_prompt("Short. " + "A much longer description of the second shot " * 3, 10)
    assert shots[1][1] > shots[0][1]


def test_element_references_become_image_positions() -> None:
    from kinema.engines.plan import reference_prompt, video_prompt

    # source = image 1; element 1 frontal = 2 (+2 references: 3, 4); element 2 frontal = 5
    prompt = "@Element1 hands a cup to @Element2; @Element3 stays"
    assert reference_prompt(prompt, [2, 0]) == (
        "the subject of image 2 hands a cup to the subject of image 5; @Element3 stays"
    )
    assert video_prompt("@Element1 waves at @Element2") == "subject 1 waves at subject 2"


def test_a_quoted_line_is_never_split_across_shots() -> None:
    prompt = (
        'A kitchen. <<<voice_1>>> says "Hello there. How are you today?" '
        "Then they sit. 「好的。走吧！」 she answers, then leaves"
    )
    pieces = [p for p, _ in split_prompt(prompt, 8)]
    assert pieces == [
        "A kitchen.",
        '<<<voice_1>>> says "Hello there. How are you today?" Then they sit.',
        "「好的。走吧！」 she answers",
        "leaves",
    ]
    cue = [p for p, _ in split_prompt('Shot 1: "Wait. Shot 2: no" Shot 2: a door', 4)]
    assert cue == ['"Wait. Shot 2: no"', "a door"]
