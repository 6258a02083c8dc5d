"""A tiny random-weight ``QwenImageEditPlusPipeline`` (the real Qwen-Image-Edit-2511 classes at
toy size), built and saved like the other tiny presets (:mod:`kinema.engines.tiny`)."""

from __future__ import annotations

from pathlib import Path

from diffusers.models.autoencoders.autoencoder_kl_qwenimage import AutoencoderKLQwenImage
from diffusers.models.transformers.transformer_qwenimage import QwenImageTransformer2DModel
from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus import QwenImageEditPlusPipeline
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
)
from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from kinema.engines.tiny import build_once, seeded
from kinema.engines.tokenizers import byte_level_qwen_tokenizer


def build_tiny_qwen_image_edit(directory: Path, seed: int = 0) -> Path:
    """Build a tiny ``QwenImageEditPlusPipeline`` into ``directory`` unless it is already there.

    ``processor/`` holds the image processor and tokenizer files, as in Qwen's repositories; the
    engine loads its processor from there (see :mod:`kinema.engines.qwen`), so
    ``model_index.json`` names none.
    """

    def write(staging: Path) -> None:
        tokenizer = _tiny_qwen_vl_tokenizer()
        _tiny_qwen_image_edit_pipeline(tokenizer, seed).save_pretrained(staging)
        # Patches of 4 merged 2×2: an 8-pixel grid, so a 64×64 image is 64 vision tokens.
        image_processor = Qwen2VLImageProcessorPil(
            patch_size=4, temporal_patch_size=2, merge_size=2, min_pixels=8 * 8, max_pixels=128**2
        )
        image_processor.save_pretrained(staging / "processor")
        tokenizer.save_pretrained(staging / "processor")

    return build_once(directory, write)


def _tiny_qwen_image_edit_pipeline(
    tokenizer: Qwen2Tokenizer, seed: int
) -> QwenImageEditPlusPipeline:
    token = tokenizer.get_vocab()
    with seeded(seed):
        text_encoder = Qwen2_5_VLForConditionalGeneration(
            Qwen2_5_VLConfig(
                text_config={
                    "hidden_size": 16,
                    "intermediate_size": 16,
                    "num_hidden_layers": 2,
                    "num_attention_heads": 2,
                    "num_key_value_heads": 2,
                    "vocab_size": len(tokenizer),
                    "max_position_embeddings": 1024,
                    "bos_token_id": token["<|endoftext|>"],
                    "eos_token_id": token["<|im_end|>"],
                    "pad_token_id": token["<|endoftext|>"],
                    # Multimodal RoPE (time, height, width): the sections add up to head_dim / 2.
                    "rope_parameters": {
                        "rope_type": "default",
                        "rope_theta": 1e6,
                        "mrope_section": [1, 1, 2],
                    },
                },
                vision_config={
                    "depth": 1,
                    "hidden_size": 16,
                    "intermediate_size": 16,
                    "num_heads": 2,
                    "out_hidden_size": 16,  # the text hidden size
                    "patch_size": 4,
                    "window_size": 16,
                    "fullatt_block_indexes": [0],
                },
                image_token_id=token["<|image_pad|>"],
                video_token_id=token["<|video_pad|>"],
                vision_start_token_id=token["<|vision_start|>"],
                vision_end_token_id=token["<|vision_end|>"],
            )
        )
    with seeded(seed):
        transformer = QwenImageTransformer2DModel(
            patch_size=2,
            in_channels=16,  # VAE latent channels × the pipeline's 2×2 packing
            out_channels=4,
            num_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=16,  # the text hidden size
            guidance_embeds=False,
            axes_dims_rope=(8, 4, 4),
            zero_cond_t=True,  # as Qwen-Image-Edit-2511: input images at timestep 0
        )
    with seeded(seed):
        # Three downsampling stages like the real VAE: 8× down, 16× with the 2×2 packing, so the
        # real 16-pixel grid and real token counts per pixel.
        vae = AutoencoderKLQwenImage(
            base_dim=4,
            z_dim=4,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
            latents_mean=[0.0] * 4,
            latents_std=[1.0] * 4,
        )
    return QwenImageEditPlusPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        # The engine loads its own processor from processor/ (see build_tiny_qwen_image_edit).
        processor=None,  # type: ignore[arg-type]
        transformer=transformer,
    )


def _tiny_qwen_vl_tokenizer() -> Qwen2Tokenizer:
    return byte_level_qwen_tokenizer(
        (
            "<|endoftext|>",
            "<|im_start|>",
            "<|im_end|>",
            "<|vision_start|>",
            "<|vision_end|>",
            "<|image_pad|>",
            "<|video_pad|>",
        )
    )
