"""A waveform as LTX-2 audio latents: the input of audio-driven video (the speech track frozen).

LTX-2 generates its audio as latents of its audio VAE; to make a video follow a given track the
track is encoded into those latents and held clean while the video is denoised. The encoding
is the reverse of the pipeline's decode (diffusers 0.42.1, ``LTX2ConditionPipeline``) and what
Lightricks' ``ltx-core`` does for its audio-to-video pipeline:

1. **Log-mel** with the audio VAE's parameters (ltx-core's ``AudioProcessor``): the waveform
   resampled to the VAE's ``sample_rate``, an STFT with a periodic Hann window of
   :data:`N_FFT` samples (ltx-core's default ``filter_length``; diffusers' config does not
   carry it), hop ``mel_hop_length``, centred with reflect padding, magnitudes (power 1), a
   Slaney mel filter bank with Slaney (area) normalisation over 0 … ``sample_rate / 2`` Hz with
   ``mel_bins`` filters, then ``log(clamp(mel, 1e-5))``; laid out ``[1, channels, time, mel]``.
   The VAE is stereo (``in_channels`` 2): a mono track is given to both channels.
2. **Encode**: ``audio_vae.encode(mel).latent_dist.mode()`` (the means; no sampling), cut to
   the pipeline's latent length for the duration, ``round(duration_s × sample_rate /
   mel_hop_length / 4)`` — as ltx-core cuts it (the centred STFT gives one mel frame more).
3. **Pack** ``[1, C, L, M] → [1, L, C·M]`` and **normalise** with the VAE's ``latents_mean`` and
   ``latents_std``: what the transformer's ``audio_hidden_states`` hold
   (``_pack_audio_latents`` and ``_normalize_audio_latents`` of the pipeline).

:class:`AudioLatents` keeps both the unpacked latents of step 2 (what the pipeline's own
``audio_latents=`` argument takes and what ``output_type="latent"`` returns, so
:func:`kinema.engines.ltx2_decode.decode_audio` turns them back into sound) and the packed,
normalised ones of step 3.

The pipeline assumes the VAE compresses time and mel bins 4× each (two downsampling levels,
``len(ch_mult) == 3``); a VAE that does not (diffusers' test size ``ch_mult=(1,)``) is refused
here rather than giving latents of the wrong length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from kinema.media.audio import resample

N_FFT = 1024
LOG_FLOOR = 1e-5

Samples = npt.NDArray[np.float32]


@dataclass(frozen=True)
class AudioLatents:
    latents: torch.Tensor
    """``[1, C, L, M]``: the VAE's latent means, not normalised."""
    packed: torch.Tensor
    """``[1, L, C·M]``, normalised with the VAE's statistics."""

    @property
    def frames(self) -> int:
        """Latent frames ``L`` (25 a second for LTX-2's 16 kHz, hop 160)."""
        return int(self.latents.shape[2])


def latent_frames(audio_vae: Any, duration_s: float) -> int:
    """The pipeline's audio latent length for ``duration_s`` (``LTX2ConditionPipeline``)."""
    config = audio_vae.config
    per_second = config.sample_rate / config.mel_hop_length / audio_vae.temporal_compression_ratio
    return round(float(duration_s * per_second))


def encode_audio(
    audio_vae: Any, waveform: Samples, sample_rate: int, duration_s: float
) -> AudioLatents:
    """``waveform`` (mono ``[samples]`` or ``[channels, samples]``, float in -1..1, at
    ``sample_rate``) as the audio latents of a clip of ``duration_s`` seconds: cut or padded
    with silence to that length first, then encoded by the rule in the module docstring."""
    _check_compression(audio_vae)
    if duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    mel = log_mel(audio_vae, _fit(waveform, sample_rate, duration_s), sample_rate)
    frames = latent_frames(audio_vae, duration_s)
    param = next(audio_vae.parameters())
    with torch.no_grad():
        encoded = audio_vae.encode(mel.to(param.device, param.dtype)).latent_dist.mode()
    if encoded.shape[2] < frames:
        raise ValueError(
            f"the audio VAE gave {encoded.shape[2]} latent frames for {duration_s} s, "
            f"fewer than the pipeline's {frames}"
        )
    latents = encoded[:, :, :frames].float()
    mean = audio_vae.latents_mean.to(latents.device, latents.dtype)
    std = audio_vae.latents_std.to(latents.device, latents.dtype)
    packed = (latents.transpose(1, 2).flatten(2, 3) - mean) / std
    return AudioLatents(latents=latents, packed=packed)


def log_mel(audio_vae: Any, waveform: Samples, sample_rate: int) -> torch.Tensor:
    """``[1, in_channels, time, mel_bins]`` log-mel spectrogram of ``waveform`` with the audio
    VAE's parameters (module docstring, step 1)."""
    config = audio_vae.config
    channels = _channels(waveform, int(config.in_channels))
    rate = int(config.sample_rate)
    at_rate = np.stack([resample(c, sample_rate, rate) for c in channels])
    signal = torch.from_numpy(at_rate)
    spectrum = torch.stft(
        signal,
        n_fft=N_FFT,
        hop_length=int(config.mel_hop_length),
        win_length=N_FFT,
        window=torch.hann_window(N_FFT),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    ).abs()  # [channels, N_FFT // 2 + 1, time]
    bank = torch.from_numpy(_mel_bank(rate, int(config.mel_bins)))  # [freqs, mel_bins]
    mel = torch.matmul(spectrum.transpose(1, 2), bank)  # [channels, time, mel_bins]
    return torch.log(torch.clamp(mel, min=LOG_FLOOR)).unsqueeze(0)


def _mel_bank(rate: int, mel_bins: int) -> npt.NDArray[np.float32]:
    from transformers.audio_utils import mel_filter_bank

    # Triangles in Hz between Slaney-mel-spaced points, area-normalised: torchaudio's
    # melscale_fbanks(norm="slaney", mel_scale="slaney"), which ltx-core's processor uses.
    bank = mel_filter_bank(
        num_frequency_bins=N_FFT // 2 + 1,
        num_mel_filters=mel_bins,
        min_frequency=0.0,
        max_frequency=rate / 2,
        sampling_rate=rate,
        norm="slaney",
        mel_scale="slaney",
    )
    return np.asarray(bank, dtype=np.float32)


def _channels(waveform: Samples, count: int) -> list[Samples]:
    samples = np.asarray(waveform, dtype=np.float32)
    if samples.ndim == 1:
        return [samples] * count
    if samples.ndim == 2 and samples.shape[0] == count:
        return list(samples)
    if samples.ndim == 2 and samples.shape[0] == 1:
        return [samples[0]] * count
    raise ValueError(
        f"waveform must be [samples] or [channels, samples] with 1 or {count} channels, "
        f"got shape {samples.shape}"
    )


def _fit(waveform: Samples, sample_rate: int, duration_s: float) -> Samples:
    samples = np.asarray(waveform, dtype=np.float32)
    length = round(duration_s * sample_rate)
    cut = samples[..., :length]
    pad = [(0, 0)] * (cut.ndim - 1) + [(0, length - cut.shape[-1])]
    return np.pad(cut, pad)


def _check_compression(audio_vae: Any) -> None:
    ch_mult = tuple(audio_vae.config.ch_mult)
    made = 2 ** (len(ch_mult) - 1)  # each level but the last halves time and mel bins
    assumed = (audio_vae.temporal_compression_ratio, audio_vae.mel_compression_ratio)
    if assumed != (made, made):
        levels = round(math.log2(assumed[0])) + 1
        raise ValueError(
            f"this audio VAE compresses time and mel bins {made}× (ch_mult={ch_mult}) but the "
            f"LTX-2 pipeline assumes {assumed[0]}× and {assumed[1]}×: its latents would not fit "
            f"the pipeline's (ch_mult needs {levels} levels, e.g. {(1,) * levels} at toy size)"
        )
