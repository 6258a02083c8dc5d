"""Tiny random-weight pipelines of the real LTX-2 and FLUX.2 klein architectures (Qwen-Image-Edit:
:mod:`kinema.engines.tiny_qwen`).

No model hub is reachable from test machines, so the tiny presets build their weights locally: every
component is the real diffusers/transformers class at a toy size (see ``notes/tiny-models.md``),
seeded, assembled into the real pipeline and written with ``save_pretrained``. The engines then
load them through the same ``from_pretrained`` path real weights take.

Builds are deterministic (fixed seeds, local RNG) and idempotent: a build is written to a temporary
sibling directory and renamed into place in one step, with a marker file last, so a crashed or
concurrent build never leaves a half-written directory that looks complete.

The marker holds the build's key: a hash of the code that builds it (the writer's module, this
module, :mod:`kinema.engines.tokenizers`) and of the torch, diffusers and transformers versions.
A finished build with another key (its sizes were changed since, or a library that initialises
the weights was upgraded) is rebuilt and replaced, never loaded: the models dir keeps builds
across runs, and an old build would load as if it were the new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import inspect
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

# Imported from their defining modules: the package-level names are lazy, and mypy resolves those
# to diffusers' dummy placeholder classes.
from diffusers.models.autoencoders.autoencoder_kl_flux2 import AutoencoderKLFlux2
from diffusers.models.autoencoders.autoencoder_kl_ltx2 import AutoencoderKLLTX2Video
from diffusers.models.autoencoders.autoencoder_kl_ltx2_audio import AutoencoderKLLTX2Audio
from diffusers.models.transformers.transformer_flux2 import Flux2Transformer2DModel
from diffusers.models.transformers.transformer_ltx2 import LTX2VideoTransformer3DModel
from diffusers.pipelines.flux2.pipeline_flux2_klein import Flux2KleinPipeline
from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors
from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2ConditionPipeline
from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
)
from transformers.models.gemma.tokenization_gemma import GemmaTokenizer
from transformers.models.gemma3.configuration_gemma3 import Gemma3Config, Gemma3TextConfig
from transformers.models.gemma3.modeling_gemma3 import Gemma3ForConditionalGeneration
from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer
from transformers.models.qwen3.configuration_qwen3 import Qwen3Config
from transformers.models.qwen3.modeling_qwen3 import Qwen3ForCausalLM
from transformers.models.siglip.configuration_siglip import SiglipVisionConfig

import kinema.engines.tokenizers as tokenizer_module
from kinema.engines.tokenizers import QWEN_CHAT_TEMPLATE, byte_level_qwen_tokenizer

MARKER = ".kinema-tiny-complete"
"""Written last inside a finished build; its presence means the directory is complete."""

LATENT_UPSAMPLER = "latent_upsampler"
"""Subfolder of the spatial latent upsampler, outside ``model_index.json`` as in LTX-2.5's
Diffusers repository (the pipeline class has no slot for it)."""


def build_tiny_ltx2(directory: Path, seed: int = 0) -> Path:
    """Build a tiny ``LTX2ConditionPipeline`` into ``directory`` unless it is already there."""
    return build_once(directory, _saving(lambda: _tiny_ltx2_pipeline(seed)))


def build_tiny_ltx2_two_stage(directory: Path, seed: int = 0) -> Path:
    """Build the tiny LTX-2 pipeline plus a tiny ×2 spatial latent upsampler in
    ``latent_upsampler/``, the layout the two-stage loader reads from real weights."""

    def write(staging: Path) -> None:
        _tiny_ltx2_pipeline(seed).save_pretrained(staging)
        with seeded(seed):
            upsampler = _tiny_latent_upsampler()
        upsampler.save_pretrained(staging / LATENT_UPSAMPLER)

    return build_once(directory, write)


def build_tiny_flux2_klein(directory: Path, seed: int = 0) -> Path:
    """Build a tiny ``Flux2KleinPipeline`` into ``directory`` unless it is already there."""
    return build_once(directory, _saving(lambda: _tiny_flux2_klein_pipeline(seed)))


def _saving(assemble: Callable[[], DiffusionPipeline]) -> Callable[[Path], None]:
    return lambda staging: assemble().save_pretrained(staging)


def build_once(directory: Path, write: Callable[[Path], None]) -> Path:
    """``write`` into ``directory`` unless a finished build with the same key is there; a
    finished build with another key is replaced (module docstring)."""
    key = build_key(write)
    if _finished_key(directory) == key:
        return directory
    stale = _finished_key(directory) is not None
    if not stale and directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory} exists but is not a finished tiny build; remove it")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the weights are not secret
    try:
        write(staging)
        (staging / MARKER).write_text(key + "\n")
        if stale:
            _set_aside(directory)
        try:
            os.replace(staging, directory)
        except OSError:
            # A concurrent build won the rename; its result is identical (same seeds).
            if _finished_key(directory) != key:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def build_key(write: Callable[[Path], None]) -> str:
    """What a build depends on: the source of the code that writes it and the versions of the
    libraries that initialise its weights."""
    digest = hashlib.sha256()
    own = inspect.getsourcefile(write)
    for path in sorted({__file__, tokenizer_module.__file__, *([own] if own else [])}):
        digest.update(Path(path).read_bytes())
    for package in ("torch", "diffusers", "transformers"):
        digest.update(f"{package}=={importlib.metadata.version(package)}".encode())
    return f"kinema-tiny-build {digest.hexdigest()}"


def _finished_key(directory: Path) -> str | None:
    """The key in a finished build's marker (markers from before keys read as ''); None: no
    finished build."""
    try:
        text = (directory / MARKER).read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return text.strip() if text.startswith("kinema-tiny-build ") else ""


def _set_aside(directory: Path) -> None:
    """Move a stale build out of the way and delete it (a rename, so that the directory is
    never a half-deleted build)."""
    trash = Path(tempfile.mkdtemp(prefix=f".{directory.name}-stale-", dir=directory.parent))
    with contextlib.suppress(FileNotFoundError):  # a concurrent rebuild moved it first
        os.replace(directory, trash / directory.name)
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    # Fork the RNG so building weights neither depends on nor disturbs the caller's torch RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _tiny_ltx2_pipeline(seed: int) -> LTX2ConditionPipeline:
    tokenizer = _tiny_gemma_tokenizer()
    text = _tiny_gemma3_text_config(len(tokenizer))
    with seeded(seed):
        text_encoder = Gemma3ForConditionalGeneration(_tiny_gemma3_config(text))
    with seeded(seed):
        transformer = LTX2VideoTransformer3DModel(
            in_channels=4,
            out_channels=4,
            patch_size=1,
            patch_size_t=1,
            num_attention_heads=2,
            attention_head_dim=8,
            cross_attention_dim=16,
            audio_in_channels=4,
            audio_out_channels=4,
            audio_num_attention_heads=2,
            audio_attention_head_dim=4,
            audio_cross_attention_dim=8,
            num_layers=2,
            qk_norm="rms_norm_across_heads",
            caption_channels=text.hidden_size,
            rope_double_precision=False,
            rope_type="split",
        )
    with seeded(seed):
        connectors = LTX2TextConnectors(
            caption_channels=text.hidden_size,
            text_proj_in_factor=text.num_hidden_layers + 1,
            video_connector_num_attention_heads=4,
            video_connector_attention_head_dim=8,
            video_connector_num_layers=1,
            video_connector_num_learnable_registers=None,
            audio_connector_num_attention_heads=4,
            audio_connector_attention_head_dim=8,
            audio_connector_num_layers=1,
            audio_connector_num_learnable_registers=None,
            connector_rope_base_seq_len=32,
            rope_theta=10000.0,
            rope_double_precision=False,
            causal_temporal_positioning=False,
            rope_type="split",
        )
    with seeded(seed):
        vae = _tiny_ltx2_video_vae()
    with seeded(seed):
        audio_vae = tiny_ltx2_audio_vae()
    with seeded(seed):
        vocoder = tiny_ltx2_vocoder()
    return LTX2ConditionPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        audio_vae=audio_vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        connectors=connectors,
        transformer=transformer,
        vocoder=vocoder,
    )


def tiny_ltx2_audio_vae(ch_mult: tuple[int, ...] = (1, 1, 1)) -> AutoencoderKLLTX2Audio:
    """The tiny LTX-2's audio VAE. Three levels compress time and mel bins 4× each, as the real
    one does (diffusers' test size ``(1,)`` does not; :mod:`.ltx2_audio` refuses that)."""
    vae: AutoencoderKLLTX2Audio = AutoencoderKLLTX2Audio(
        base_channels=4,
        output_channels=2,
        ch_mult=ch_mult,
        num_res_blocks=1,
        attn_resolutions=None,
        in_channels=2,
        resolution=32,
        latent_channels=2,
        norm_type="pixel",
        causality_axis="height",
        dropout=0.0,
        mid_block_add_attention=False,
        sample_rate=16000,
        mel_hop_length=160,
        is_causal=True,
        mel_bins=8,
    )
    return vae


def tiny_ltx2_vocoder() -> LTX2Vocoder:
    """The tiny LTX-2's vocoder (random weights from the caller's seed)."""
    vocoder: LTX2Vocoder = LTX2Vocoder(
        in_channels=2 * 8,  # audio VAE output channels × mel bins
        hidden_channels=32,
        out_channels=2,
        # Upsampling × mel hop (4·4·10 = 160) so the waveform lasts as long as the video,
        # as with the real vocoder; diffusers' tests use 2·2 and get 1/40 of the samples.
        upsample_kernel_sizes=[8, 8, 20],
        upsample_factors=[4, 4, 10],
        resnet_kernel_sizes=[3],
        resnet_dilations=[[1, 3, 5]],
        leaky_relu_negative_slope=0.1,
        output_sampling_rate=16000,
    )
    return vocoder


def _tiny_ltx2_video_vae() -> AutoencoderKLLTX2Video:
    # Unlike diffusers' own tests (2× compression), this VAE compresses like the real one: 4×4
    # patches and three spatiotemporal stages, 32× in space and 8× in time. That keeps the
    # transformer's token count per pixel real (so the full 361 frames cost about a second), and it
    # makes the 8k+1 frame grid and keyframe placement behave as they do with real weights.
    vae: AutoencoderKLLTX2Video = AutoencoderKLLTX2Video(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 8, 8),
        down_block_types=("LTX2VideoDownBlock3D",) * 3,
        decoder_block_out_channels=(8, 8, 8),
        layers_per_block=(1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1),
        spatio_temporal_scaling=(True,) * 3,
        decoder_spatio_temporal_scaling=(True,) * 3,
        decoder_inject_noise=(False,) * 4,
        downsample_type=("spatiotemporal",) * 3,
        upsample_type=("spatiotemporal",) * 3,
        upsample_residual=(False,) * 3,
        upsample_factor=(1, 1, 1),
        timestep_conditioning=False,
        patch_size=4,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
        # Reflect padding needs 2+ latent pixels a side; zeros lets a 32-pixel side (1 latent) work.
        decoder_spatial_padding_mode="zeros",
    )
    return vae


def _tiny_latent_upsampler() -> LTX2LatentUpsamplerModel:
    # Spatial ×2 only (time untouched) through a plain 2×2 pixel shuffle, as LTX-2.5's spatial
    # upsampler config has it (no rational resampler). GroupNorm takes 32 groups, so 32 middle
    # channels is the smallest width the class accepts.
    upsampler: LTX2LatentUpsamplerModel = LTX2LatentUpsamplerModel(
        in_channels=4,  # the tiny video VAE's latent channels
        mid_channels=32,
        num_blocks_per_stage=1,
        dims=3,
        spatial_upsample=True,
        temporal_upsample=False,
        use_rational_resampler=False,
    )
    return upsampler


def _tiny_gemma3_text_config(vocab_size: int) -> Gemma3TextConfig:
    return Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=32,  # must equal the connectors' heads × head dim (4 × 8)
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=64,
        max_position_embeddings=512,
    )


def _tiny_gemma3_config(text: Gemma3TextConfig) -> Gemma3Config:
    vision = SiglipVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=16,
        patch_size=4,
    )
    # 4 image tokens = a 2×2 pooling of the 4×4 patch grid (must be a square dividing it).
    return Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4)


def _tiny_gemma_tokenizer() -> GemmaTokenizer:
    specials = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")
    byte_fallback = tuple(f"<0x{b:02X}>" for b in range(256))
    # No merges and no letters: text becomes byte-fallback tokens, with "▁" for spaces.
    tokens = (*specials, *byte_fallback, "▁")
    return GemmaTokenizer(vocab={token: i for i, token in enumerate(tokens)}, merges=[])


def _tiny_flux2_klein_pipeline(seed: int) -> Flux2KleinPipeline:
    tokenizer = _tiny_qwen_tokenizer()
    with seeded(seed):
        text_encoder = Qwen3ForCausalLM(
            Qwen3Config(
                hidden_size=16,
                intermediate_size=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=2,
                vocab_size=len(tokenizer),
                max_position_embeddings=512,
            )
        )
    with seeded(seed):
        transformer = Flux2Transformer2DModel(
            patch_size=1,
            in_channels=4,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=16,  # text hidden size × len(text_encoder_out_layers)
            timestep_guidance_channels=256,
            axes_dims_rope=[4, 4, 4, 4],
            guidance_embeds=False,
        )
    with seeded(seed):
        # Four stages like the real VAE (8× down, 16× with the pipeline's 2×2 packing) rather than
        # diffusers' test VAE (1×): real token counts per pixel, and the real 16-pixel grid.
        vae = AutoencoderKLFlux2(
            sample_size=32,
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(4, 4, 4, 4),
            layers_per_block=1,
            latent_channels=1,
            norm_num_groups=1,
            use_quant_conv=False,
            use_post_quant_conv=False,
        )
    return Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        # klein 4B is step-distilled: guidance is ignored, one transformer pass per step.
        is_distilled=True,
    )


def _tiny_qwen_tokenizer() -> Qwen2Tokenizer:
    tokenizer = byte_level_qwen_tokenizer(("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer
