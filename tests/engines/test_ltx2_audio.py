"""A waveform as LTX-2 audio latents, with a tiny random-weight audio VAE of the real architecture
(``AutoencoderKLLTX2Audio``) and the tiny preset's vocoder sizes: shapes the pipeline expects,
packing and normalisation exactly as diffusers', a round trip back to sound through the worker's
own audio decode, and latents that follow the waveform."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch

from kinema.engines.ltx2_audio import AudioLatents, encode_audio, latent_frames, log_mel

pytestmark = pytest.mark.engines
Wave = npt.NDArray[np.float32]
RATE = 24_000  # a speech engine's rate; the VAE's is 16 kHz


def tiny_audio_vae(ch_mult: tuple[int, ...] = (1, 1, 1)) -> Any:
    """The tiny preset's audio VAE (kinema.engines.tiny), seeded, with latent statistics other
    than the identity so that normalising shows."""
    from kinema.engines.tiny import tiny_ltx2_audio_vae

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = tiny_ltx2_audio_vae(ch_mult).eval()
        vae.latents_mean.copy_(torch.tensor([0.1, -0.2, 0.3, 0.05]))
        vae.latents_std.copy_(torch.tensor([0.5, 2.0, 1.5, 0.8]))
    return vae


@pytest.fixture(scope="module")
def vae() -> Any:
    return tiny_audio_vae()


@pytest.fixture(scope="module")
def vocoder() -> Any:
    from kinema.engines.tiny import tiny_ltx2_vocoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return tiny_ltx2_vocoder().eval()


def tone(hz: float, seconds: float = 2.0, rate: int = RATE) -> Wave:
    t = np.arange(round(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_latents_have_the_pipelines_shape(vae: Any) -> None:
    encoded = encode_audio(vae, tone(220), RATE, 2.0)
    assert isinstance(encoded, AudioLatents)
    # 16 kHz / hop 160 / 4 = 25 latent frames a second; 2 channels × 8 / 4 mel bins.
    assert encoded.frames == latent_frames(vae, 2.0) == 50
    assert tuple(encoded.latents.shape) == (1, 2, 50, 2)
    assert tuple(encoded.packed.shape) == (1, 50, 4)
    # A track shorter or longer than the clip is padded with silence or cut to it.
    assert encode_audio(vae, tone(220, seconds=1.3), RATE, 2.0).frames == 50
    assert encode_audio(vae, tone(220, seconds=3.0), RATE, 2.0).frames == 50


def test_packing_and_normalising_are_diffusers_own(vae: Any) -> None:
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2ConditionPipeline as Pipe

    encoded = encode_audio(vae, tone(330), RATE, 2.0)
    expected = Pipe._normalize_audio_latents(
        Pipe._pack_audio_latents(encoded.latents), vae.latents_mean, vae.latents_std
    )
    assert torch.equal(encoded.packed, expected)
    # The pipeline's own inverse gives the latents back.
    back = Pipe._unpack_audio_latents(
        Pipe._denormalize_audio_latents(encoded.packed, vae.latents_mean, vae.latents_std),
        encoded.frames,
        num_mel_bins=2,
    )
    torch.testing.assert_close(back, encoded.latents)
    # The latents are the encoder's means for the track's log-mel, cut to the clip.
    mel = log_mel(vae, tone(330), RATE)
    with torch.no_grad():
        means = vae.encode(mel).latent_dist.mode()
    assert means.shape[2] == 51  # the centred STFT's extra frame, cut as ltx-core cuts it
    assert torch.equal(encoded.latents, means[:, :, :50])


@pytest.mark.parametrize(("hz", "band"), [(300, 0), (1000, 2), (3000, 5), (6000, 7)])
def test_log_mel_has_the_vaes_parameters(vae: Any, hz: float, band: int) -> None:
    mel = log_mel(vae, tone(hz), RATE)
    # Stereo, 100 mel frames a second (+1, centred), the VAE's 8 bins.
    assert tuple(mel.shape) == (1, 2, 201, 8)
    assert torch.equal(mel[0, 0], mel[0, 1])  # mono is given to both channels
    # Slaney mel filters over 0-8 kHz, 8 of them, centred at about 0.33, 0.67, 1.0, 1.4, 2.0,
    # 2.7, 3.8 and 5.3 kHz: each tone is loudest in the filter nearest it.
    assert int(mel[0, 0, 100].argmax()) == band


def test_silence_is_at_the_log_floor(vae: Any) -> None:
    silent = log_mel(vae, np.zeros(RATE, np.float32), RATE)
    torch.testing.assert_close(silent, torch.full_like(silent, float(np.log(1e-5))))


def test_encode_decode_round_trips_to_a_clip_of_the_same_length(vae: Any, vocoder: Any) -> None:
    from kinema.engines.ltx2_decode import decode_audio

    encoded = encode_audio(vae, tone(220), RATE, 2.0)
    sound = decode_audio(SimpleNamespace(audio_vae=vae, vocoder=vocoder), encoded.latents)
    # 50 latent frames → 4·50 − 3 mel frames (causal) → × hop 160 at 16 kHz: 2 s less 3 hops.
    assert sound.shape == (2, (4 * 50 - 3) * 160)
    assert np.isfinite(sound).all()


def test_other_waveforms_give_other_latents(vae: Any) -> None:
    first = encode_audio(vae, tone(220), RATE, 2.0)
    assert torch.equal(first.packed, encode_audio(vae, tone(220), RATE, 2.0).packed)
    for other in (tone(440), tone(220) * 0.1, np.zeros(2 * RATE, np.float32)):
        assert not torch.allclose(first.packed, encode_audio(vae, other, RATE, 2.0).packed)
    # A track at another rate is resampled: the same tone at 16 kHz gives nearly the same.
    at_16k = encode_audio(vae, tone(220, rate=16_000), 16_000, 2.0)
    assert float((first.packed - at_16k.packed).abs().max()) < 0.05 * float(
        first.packed.abs().max()
    )


def test_stereo_and_mono_tracks(vae: Any) -> None:
    mono = tone(220)
    assert torch.equal(
        encode_audio(vae, mono, RATE, 2.0).packed,
        encode_audio(vae, np.stack([mono, mono]), RATE, 2.0).packed,
    )
    with pytest.raises(ValueError, match="1 or 2 channels"):
        encode_audio(vae, np.stack([mono, mono, mono]), RATE, 2.0)


def test_a_vae_that_does_not_compress_like_the_pipeline_is_refused() -> None:
    with pytest.raises(ValueError, match=r"compresses time and mel bins 1× .*ch_mult needs 3"):
        encode_audio(tiny_audio_vae(ch_mult=(1,)), tone(220), RATE, 2.0)
    with pytest.raises(ValueError, match="duration_s must be positive"):
        encode_audio(tiny_audio_vae(), tone(220), RATE, 0.0)
