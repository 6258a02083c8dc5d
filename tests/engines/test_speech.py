"""Speech engines: the tiny VibeVoice built and loaded like real weights, conditioned on the
reference clip; the VoxCPM2 adapter against a stand-in model (the ``voxcpm`` package is not a
dependency of Kinema) and, where the package is installed, a tiny random-weight VoxCPM2 through
it; missing weights or package stop the VoxCPM2 loader with the command that fixes it."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from kinema.engines.registry import LoadOptions
from kinema.engines.speech import (
    VOXCPM2_INSTALL,
    Reference,
    Speech,
    VoiceEngine,
    load_voice_engine,
)
from kinema.engines.weights import WeightsMissing
from kinema.voices.reference import decode_wav

pytestmark = pytest.mark.engines
Wave = npt.NDArray[np.float32]


def clip(hz: float, rate: int = 24_000, seconds: float = 5.0) -> Reference:
    t = np.arange(round(seconds * rate)) / rate
    return Reference((0.1 * np.sin(2 * np.pi * hz * t)).astype(np.float32), rate)


@pytest.fixture(scope="module")
def tiny(load_options: LoadOptions) -> VoiceEngine:
    return load_voice_engine("tiny-vibevoice", load_options)


def test_tiny_is_built_into_models_dir_and_loaded_like_real_weights(
    tiny: VoiceEngine, load_options: LoadOptions
) -> None:
    from kinema.engines.vibevoice import VibeVoiceEngine

    assert isinstance(tiny, VibeVoiceEngine) and isinstance(tiny, VoiceEngine)
    built = load_options.models_dir / "tiny-vibevoice"
    assert {"config.json", "model.safetensors", "generation_config.json"} <= {
        p.name for p in built.iterdir()
    }
    generation = json.loads((built / "generation_config.json").read_text())
    assert generation["noise_scheduler_class"] == "DPMSolverMultistepScheduler"
    assert json.loads((built / "config.json").read_text())["model_type"] == "vibevoice"


def test_tiny_speaks_mono_float32_within_max_seconds(tiny: VoiceEngine) -> None:
    speech = tiny.speak("Are you coming with us?", clip(220), "en", 10.0, seed=1)
    assert speech.sample_rate == tiny.capabilities.sample_rate == 24_000
    assert speech.waveform.dtype == np.float32 and speech.waveform.ndim == 1
    # The estimate: 5 words at 2.5 a second, 2 s, in 3200-sample frames at 7.5 a second.
    assert len(speech.waveform) == 15 * 3200
    assert 0.01 < float(np.max(np.abs(speech.waveform))) <= 1.0
    capped = tiny.speak("你好，今天天气很好，我们去公园散步吧", clip(220), "zh", 1.0, seed=1)
    assert len(capped.waveform) <= 24_000


def test_the_reference_reaches_the_model(tiny: VoiceEngine) -> None:
    text = "Give me a minute."

    def say(reference: Reference | None, seed: int = 4) -> Wave:
        return tiny.speak(text, reference, "en", 5.0, seed=seed).waveform

    first = say(clip(220))
    assert np.array_equal(first, say(clip(220)))  # same clip and seed: the same waveform

    def differs(other: Wave) -> bool:
        size = min(len(first), len(other))
        return float(np.max(np.abs(first[:size] - other[:size]))) > 0.1 * np.max(np.abs(first))

    assert differs(say(clip(330)))  # another voice
    assert differs(say(None))  # the model's own voice
    assert not differs(say(clip(220, rate=16_000)))  # the same clip at 16 kHz, resampled
    assert differs(say(clip(220), seed=5))


def test_an_empty_line_is_refused(tiny: VoiceEngine) -> None:
    with pytest.raises(ValueError, match="nothing to say"):
        tiny.speak("   ", None, "en", 2.0)


class FakeVoxCPM:
    """Stands in for ``voxcpm.VoxCPM``: records the call, answers with its reference's audio."""

    def __init__(self) -> None:
        vae = type("VAE", (), {"sample_rate": 16_000})()
        self.tts_model = type(
            "TTS", (), {"sample_rate": 48_000, "audio_vae": vae, "patch_size": 4, "chunk_size": 640}
        )()
        self.calls: list[dict[str, Any]] = []
        self.reference: tuple[Wave, int] | None = None

    def generate(self, **kwargs: Any) -> Wave:
        self.calls.append(kwargs)
        if kwargs["reference_wav_path"] is not None:
            self.reference = decode_wav(Path(kwargs["reference_wav_path"]).read_bytes())
        return np.full(48_000 * 4, 0.5, dtype=np.float32)  # 4 s


def test_voxcpm_adapter_passes_the_clip_and_bounds_the_length() -> None:
    from kinema.engines.voxcpm import VoxCPMEngine

    model = FakeVoxCPM()
    engine = VoxCPMEngine(model, steps=3)
    speech = engine.speak("你好", clip(220, rate=24_000), "zh", 2.5, seed=1)
    assert isinstance(speech, Speech) and speech.sample_rate == 48_000
    assert len(speech.waveform) == int(2.5 * 48_000)  # cut at max_seconds
    call = model.calls[0]
    assert call["text"] == "你好" and call["inference_timesteps"] == 3
    assert call["max_len"] == 16  # 6.25 steps a second (16 kHz / (4 × 640)) × 2.5 s
    assert model.reference is not None
    samples, rate = model.reference
    assert rate == 16_000 and len(samples) == 5 * 16_000  # written at the model's input rate
    engine.speak("hi", None, "en", 1.0)
    assert model.calls[1]["reference_wav_path"] is None


def test_voxcpm2_without_weights_stops_with_the_download_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    (tmp_path / "voxcpm2").mkdir()
    (tmp_path / "voxcpm2" / "model_index.json").write_text("{}")  # a diffusers marker: not it
    with pytest.raises(WeightsMissing) as err:
        load_voice_engine("voxcpm2", LoadOptions(models_dir=tmp_path, device="cpu"))
    message = str(err.value)
    assert f"hf download openbmb/VoxCPM2 --local-dir {tmp_path / 'voxcpm2'}" in message


def test_voxcpm2_without_its_package_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "voxcpm2"
    weights.mkdir()
    (weights / "config.json").write_text("{}")
    monkeypatch.setitem(__import__("sys").modules, "voxcpm", None)  # import fails
    with pytest.raises(ImportError) as err:
        load_voice_engine("voxcpm2", LoadOptions(models_dir=tmp_path, device="cpu"))
    assert VOXCPM2_INSTALL in str(err.value) and "docs/engines.md" in str(err.value)


FAKE_PACKAGE = """
import torchaudio  # as the real package does, for its first-generation model

calls = []


class VoxCPM:
    def __init__(self, **kwargs):
        calls.append(kwargs)
        vae = type("VAE", (), {"sample_rate": 16000})()
        self.tts_model = type(
            "TTS", (), {"sample_rate": 48000, "audio_vae": vae, "patch_size": 4, "chunk_size": 640}
        )()
"""


@pytest.fixture
def fake_voxcpm_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A ``voxcpm`` package on sys.path that imports torchaudio at the top, as the real one."""
    root = tmp_path / "site"
    (root / "voxcpm").mkdir(parents=True)
    (root / "voxcpm" / "__init__.py").write_text(FAKE_PACKAGE)
    monkeypatch.syspath_prepend(str(root))
    weights = tmp_path / "models" / "voxcpm2"
    weights.mkdir(parents=True)
    (weights / "config.json").write_text("{}")
    yield weights
    sys.modules.pop("voxcpm", None)


def test_voxcpm2_loads_without_torchaudio_and_without_the_denoiser(
    fake_voxcpm_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kinema.engines.voxcpm import VoxCPMEngine

    monkeypatch.setitem(sys.modules, "torchaudio", None)  # not importable here
    options = LoadOptions(models_dir=fake_voxcpm_package.parent, device="cpu")
    engine = load_voice_engine("voxcpm2", options)
    assert isinstance(engine, VoxCPMEngine) and engine.capabilities.sample_rate == 48_000
    package = sys.modules["voxcpm"]
    assert package.calls == [
        {
            "voxcpm_model_path": str(fake_voxcpm_package),
            "zipenhancer_model_path": None,
            "enable_denoiser": False,
            "optimize": False,  # torch.compile on CUDA only
            "device": "cpu",
        }
    ]
    assert sys.modules["torchaudio"] is None  # the placeholder is gone again
    with pytest.raises(ImportError, match="torchaudio is not installed"):
        package.torchaudio.load("x.wav")  # what the package got in its place


def test_voxcpm2_weights_in_the_hub_cache_are_found_offline(
    fake_voxcpm_package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "hub"
    snapshot = cache / "models--openbmb--VoxCPM2" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (cache / "models--openbmb--VoxCPM2" / "refs").mkdir()
    (cache / "models--openbmb--VoxCPM2" / "refs" / "main").write_text("0123abc")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    empty = tmp_path / "no-models"  # nothing under <models_dir>/voxcpm2
    load_voice_engine("voxcpm2", LoadOptions(models_dir=empty, device="cpu"))
    [call] = sys.modules["voxcpm"].calls
    assert Path(call["voxcpm_model_path"]) == snapshot.resolve()


@pytest.mark.skipif(
    importlib.util.find_spec("voxcpm") is None, reason="the voxcpm package is not installed"
)
# The package and librosa's audioread warn of what they use (torch.jit.script, weight_norm,
# aifc, …): not Kinema's to fix.
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_voxcpm2_through_the_real_package(tmp_path: Path) -> None:
    build_tiny_voxcpm2(tmp_path / "voxcpm2")
    engine = load_voice_engine(
        "voxcpm2", LoadOptions(models_dir=tmp_path, device="cpu", num_inference_steps=2)
    )
    assert engine.capabilities.sample_rate == 48_000

    def say(reference: Reference | None, seed: int = 1) -> Speech:
        return engine.speak("Are you coming with us?", reference, "en", 3.0, seed=seed)

    first = say(clip(220))
    assert first.waveform.dtype == np.float32 and first.waveform.ndim == 1
    assert 0 < len(first.waveform) <= 3 * 48_000 and first.info["max_len"] == 19
    assert np.array_equal(first.waveform, say(clip(220)).waveform)
    # Random weights: the clip moves the waveform only slightly (about 1e-6), but it does.
    assert not np.array_equal(first.waveform, say(clip(330)).waveform)
    assert not np.array_equal(first.waveform, say(None).waveform)


def build_tiny_voxcpm2(directory: Path) -> None:
    """A random-weight VoxCPM2 laid out as ``openbmb/VoxCPM2`` (config, tokenizer, model and
    audio VAE safetensors), at toy size: the real VAE rates (16 kHz in, 48 kHz out)."""
    import torch
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaTokenizerFast

    from kinema.engines.voxcpm import _import_voxcpm

    _import_voxcpm()
    voxcpm2 = importlib.import_module("voxcpm.model.voxcpm2")
    audiovae = importlib.import_module("voxcpm.modules.audiovae")
    # Ids 3..109 are kept for the model's own audio and reference markers (101..104).
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"<special_{i}>": i for i in range(3, 110)}
    for char in [chr(c) for c in range(32, 127)] + list("你好今天气很们去公园散步吧，。？！"):
        vocab.setdefault(char, len(vocab))
    words = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tokenizer = LlamaTokenizerFast(
        tokenizer_object=words, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(directory)
    hidden, heads = 32, 2
    rope = {
        "type": "longrope",
        "long_factor": [1.0] * (hidden // heads // 2),
        "short_factor": [1.0] * (hidden // heads // 2),
        "original_max_position_embeddings": 4096,
    }
    lm = {
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_size": hidden,
        "intermediate_size": 64,
        "max_position_embeddings": 4096,
        "num_attention_heads": heads,
        "num_hidden_layers": 2,
        "num_key_value_heads": 1,
        "rms_norm_eps": 1e-5,
        "rope_scaling": rope,
        "vocab_size": len(vocab),
        "use_mup": False,
        "scale_emb": 1.0,
        "dim_model_base": hidden,
        "scale_depth": 1.0,
        "rope_theta": 10000.0,
    }
    small = {"hidden_dim": hidden, "ffn_dim": 64, "num_heads": heads, "num_layers": 1}
    config = {
        "architecture": "voxcpm2",
        "lm_config": lm,
        "patch_size": 4,
        "feat_dim": 8,
        "residual_lm_num_layers": 1,
        "scalar_quantization_latent_dim": 16,
        "scalar_quantization_scale": 9,
        "encoder_config": small,
        "dit_config": small | {"cfm_config": {"inference_cfg_rate": 1.0}},
        "audio_vae_config": {"encoder_dim": 4, "latent_dim": 8, "decoder_dim": 64, "cond_dim": 8},
        "max_length": 1024,
        "device": "cpu",
        "dtype": "float32",
    }
    (directory / "config.json").write_text(json.dumps(config))
    parsed = voxcpm2.VoxCPMConfig.model_validate(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = audiovae.AudioVAEV2(config=parsed.audio_vae_config)
        model = voxcpm2.VoxCPM2Model(parsed, tokenizer, vae, device="cpu")
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith("audio_vae.")}
    save_file({k: v.contiguous() for k, v in weights.items()}, directory / "model.safetensors")
    save_file(
        {k: v.contiguous() for k, v in vae.state_dict().items()}, directory / "audiovae.safetensors"
    )
