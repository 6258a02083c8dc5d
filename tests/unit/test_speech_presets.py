"""Speech presets are data the API process can read without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kinema.engines.speech import (
    SpeechCapabilities,
    SpeechPreset,
    get_speech_preset,
    register_speech,
    speech_presets,
)

pytestmark = pytest.mark.unit


def test_the_built_in_speech_presets() -> None:
    assert [p.name for p in speech_presets()] == ["tiny-vibevoice", "voxcpm2"]
    vox = get_speech_preset("voxcpm2")
    assert vox.weights == "openbmb/VoxCPM2" and vox.license.startswith("Apache-2.0")
    assert vox.capabilities.sample_rate == 48_000 and {"en", "zh"} <= vox.capabilities.languages
    assert "pip install --no-deps voxcpm" in vox.install
    tiny = get_speech_preset("tiny-vibevoice")
    assert "test" in tiny.tags and tiny.capabilities.clones


def test_unknown_and_duplicate_presets() -> None:
    with pytest.raises(KeyError, match="known: tiny-vibevoice, voxcpm2"):
        get_speech_preset("bark")
    preset = SpeechPreset("voxcpm2", SpeechCapabilities(sample_rate=1), "m:f")
    with pytest.raises(ValueError, match="already registered"):
        register_speech(preset)
    with pytest.raises(ValueError, match="module:function"):
        register_speech(SpeechPreset("other", SpeechCapabilities(sample_rate=1), "nocolon"))


def test_reading_them_imports_no_torch() -> None:
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers', 'diffusers', 'voxcpm'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
from kinema.engines.speech import speech_presets
import kinema.voices.script, kinema.voices.timeline, kinema.voices.reference
print(len(speech_presets()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"
