"""Real-size configs (kinema/engines/configs): every one instantiates on the meta device with the
published parameter count, the components agree with each other, and bench/engines.py runs end to
end in its CPU smoke mode."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from kinema.engines import realsize

pytestmark = pytest.mark.engines

B = 1_000_000_000
M = 1_000_000

# (family, component) → parameter band. Sources: configs/README.md.
BANDS: dict[tuple[str, str], tuple[int, int]] = {
    # LTX-2.5 is published as a "22B" model: transformer + text connectors (one checkpoint).
    ("ltx2.5", "transformer"): (int(18.5 * B), int(19.5 * B)),
    ("ltx2.5", "connectors"): (int(3.0 * B), int(3.3 * B)),
    # google/gemma-4-12B: 11,959,730,224 parameters (hub API); equal within 0.01 %.
    ("ltx2.5", "text_encoder"): (11_958_500_000, 11_961_000_000),
    ("ltx2.5", "vae"): (600 * M, 800 * M),
    ("ltx2.5", "audio_vae"): (40 * M, 70 * M),
    ("ltx2.5", "vocoder"): (100 * M, 150 * M),
    ("ltx2.5", "latent_upsampler"): (450 * M, 550 * M),
    ("ltx2.5", "duration_head"): (1 * M, 5 * M),
    ("flux2-klein-4b", "transformer"): (int(3.7 * B), int(4.0 * B)),
    # Qwen3-4B: 4.02B with tied embeddings.
    ("flux2-klein-4b", "text_encoder"): (int(4.0 * B), int(4.05 * B)),
    ("flux2-klein-4b", "vae"): (80 * M, 90 * M),
    # Qwen-Image is published as a 20B MMDiT (20.43B built here).
    ("qwen-image-edit", "transformer"): (int(20.3 * B), int(20.6 * B)),
    # Qwen2.5-VL-7B-Instruct: 8.29B (model card), vision tower (0.68B) and untied LM head included.
    ("qwen-image-edit", "text_encoder"): (int(8.28 * B), int(8.30 * B)),
    # The Wan 2.1 VAE architecture: 127M parameters in the Wan report.
    ("qwen-image-edit", "vae"): (120 * M, 135 * M),
}
LAYOUTS = (realsize.LTX25, realsize.FLUX2_KLEIN_4B, realsize.QWEN_IMAGE_EDIT)
MODELS = [
    (layout, component) for layout in LAYOUTS for component in (*layout.models, *layout.extras)
]
NOT_MODELS = {"scheduler", "tokenizer", "processor"}
"""Config files that are no model: no parameters to count."""


def test_every_shipped_config_has_a_band() -> None:
    shipped = {
        (path.parent.name, path.stem)
        for path in realsize.CONFIGS.glob("*/*.json")
        if path.stem not in NOT_MODELS
    }
    assert shipped == set(BANDS)
    assert {(layout.family, component) for layout, component in MODELS} == shipped


@pytest.mark.parametrize(
    ("layout", "component"), MODELS, ids=[f"{lay.family}-{c}" for lay, c in MODELS]
)
def test_real_size_on_meta_device(layout: realsize.Layout, component: str) -> None:
    module = realsize.build_component(layout, component, device="meta")
    assert all(p.device.type == "meta" for p in module.parameters())
    low, high = BANDS[(layout.family, component)]
    assert low <= realsize.parameter_count(module) <= high


def test_ltx25_is_22b_and_about_66_gib_in_bf16() -> None:
    sizes = realsize.weights_bytes("ltx2.5-distilled")
    dit = (sizes["transformer"] + sizes["connectors"]) / 2
    assert 21.5 * B <= dit <= 22.5 * B
    pipeline = sum(size for name, size in sizes.items() if name in realsize.LTX25.models)
    assert 64 <= pipeline / 2**30 <= 68


@pytest.mark.parametrize("smoke", [False, True], ids=["real", "smoke"])
def test_ltx25_components_agree(smoke: bool) -> None:
    c = {name: realsize.load_config("ltx2.5", name, smoke) for name in realsize.LTX25.models}
    up = realsize.load_config("ltx2.5", "latent_upsampler", smoke)
    dit, vae, audio, text = c["transformer"], c["vae"], c["audio_vae"], c["text_encoder"]
    video_dim = dit["num_attention_heads"] * dit["attention_head_dim"]
    audio_dim = dit["audio_num_attention_heads"] * dit["audio_attention_head_dim"]
    # The VAE patchifies pixels itself; the transformer's own patch multiplies latent channels.
    patch = dit["patch_size"] ** 2 * dit["patch_size_t"]
    assert dit["in_channels"] == dit["out_channels"] == vae["latent_channels"] * patch
    assert dit["vae_scale_factors"] == [
        vae["temporal_compression_ratio"],
        vae["spatial_compression_ratio"],
        vae["spatial_compression_ratio"],
    ]
    mel_compression = 2 ** (len(audio["ch_mult"]) - 1)
    assert (
        dit["audio_in_channels"] == audio["latent_channels"] * audio["mel_bins"] // mel_compression
    )
    assert dit["audio_sampling_rate"] == audio["sample_rate"]
    assert dit["audio_hop_length"] == audio["mel_hop_length"]
    assert dit["cross_attention_dim"] == video_dim
    assert dit["audio_cross_attention_dim"] == audio_dim
    connectors = c["connectors"]
    assert connectors["caption_channels"] == text["text_config"]["hidden_size"]
    assert connectors["text_proj_in_factor"] == text["text_config"]["num_hidden_layers"] + 1
    assert connectors["video_hidden_dim"] == video_dim == _heads(connectors, "video")
    assert connectors["audio_hidden_dim"] == audio_dim == _heads(connectors, "audio")
    vocoder = c["vocoder"]
    assert vocoder["in_channels"] == audio["output_channels"] * audio["mel_bins"]
    assert vocoder["num_mel_channels"] == audio["mel_bins"]
    assert vocoder["input_sampling_rate"] == audio["sample_rate"]
    assert math.prod(vocoder["upsample_factors"]) == audio["mel_hop_length"]
    ratio = vocoder["output_sampling_rate"] // vocoder["input_sampling_rate"]
    assert math.prod(vocoder["bwe_upsample_factors"]) == vocoder["hop_length"] * ratio
    assert up["in_channels"] == vae["latent_channels"]
    head = c["duration_head"]
    assert head["video_cross_attention_dim"] == video_dim
    assert head["audio_cross_attention_dim"] == audio_dim


@pytest.mark.parametrize("smoke", [False, True], ids=["real", "smoke"])
def test_flux2_klein_components_agree(smoke: bool) -> None:
    dit, vae, text = (
        realsize.load_config("flux2-klein-4b", name, smoke)
        for name in ("transformer", "vae", "text_encoder")
    )
    assert dit["in_channels"] == vae["latent_channels"] * math.prod(vae["patch_size"])
    assert sum(dit["axes_dims_rope"]) == dit["attention_head_dim"]
    # Flux2KleinPipeline stacks three text-encoder layers, (9, 18, 27) by default.
    assert dit["joint_attention_dim"] == 3 * text["hidden_size"]
    assert text["num_hidden_layers"] > 27
    assert not dit["guidance_embeds"]


def test_qwen_image_edit_is_about_57_gb_in_bf16() -> None:
    sizes = realsize.weights_bytes("qwen-image-edit")
    assert 56 * B <= sum(sizes.values()) <= 59 * B
    assert 40 * B <= sizes["transformer"] <= 42 * B


@pytest.mark.parametrize("smoke", [False, True], ids=["real", "smoke"])
def test_qwen_image_edit_components_agree(smoke: bool) -> None:
    dit, vae, text, processor = (
        realsize.load_config("qwen-image-edit", name, smoke)
        for name in ("transformer", "vae", "text_encoder", "processor")
    )
    llm, vision = text["text_config"], text["vision_config"]
    # The pipeline packs 2×2 latent patches into channels; the VAE downsamples 8× (3 stages).
    assert dit["in_channels"] == vae["z_dim"] * dit["patch_size"] ** 2
    assert dit["out_channels"] == vae["z_dim"]
    assert len(vae["dim_mult"]) - 1 == len(vae["temperal_downsample"]) == 3
    assert len(vae["latents_mean"]) == len(vae["latents_std"]) == vae["z_dim"]
    assert sum(dit["axes_dims_rope"]) == dit["attention_head_dim"]
    # The prompt embeddings are the LLM's last hidden states; image tokens enter at its width.
    assert dit["joint_attention_dim"] == llm["hidden_size"] == vision["out_hidden_size"]
    head_dim = llm["hidden_size"] // llm["num_attention_heads"]
    assert sum(llm["rope_parameters"]["mrope_section"]) * 2 == head_dim
    assert processor["patch_size"] == vision["patch_size"]
    assert processor["merge_size"] == vision["spatial_merge_size"]
    assert processor["temporal_patch_size"] == vision["temporal_patch_size"]
    assert dit["zero_cond_t"]  # Qwen-Image-Edit-2511: input images at timestep 0
    assert not dit["guidance_embeds"]  # true CFG, not a guidance embedding


def test_qwen_vl_tokenizer_keeps_the_real_ids() -> None:
    text = realsize.load_config("qwen-image-edit", "text_encoder")
    tokenizer = realsize.build_tokenizer(realsize.QWEN_IMAGE_EDIT)
    # 151,643 regular tokens + 22 added; the embedding table is padded to 152,064 rows.
    assert len(tokenizer) == 151_665 < text["text_config"]["vocab_size"]
    ids = {
        "<|image_pad|>": text["image_token_id"],
        "<|video_pad|>": text["video_token_id"],
        "<|vision_start|>": text["vision_start_token_id"],
        "<|vision_end|>": text["vision_end_token_id"],
        "<|endoftext|>": text["text_config"]["bos_token_id"],
        "<|im_end|>": text["text_config"]["eos_token_id"],
    }
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in ids} == ids
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|endoftext|>")
    encoded = tokenizer("<|im_start|>user\na fox<|image_pad|><|im_end|>").input_ids
    assert encoded[0] == 151_644 and encoded[-2:] == [151_655, 151_645]


@pytest.mark.parametrize(
    "layout", [realsize.LTX25, realsize.FLUX2_KLEIN_4B], ids=lambda lay: lay.family
)
def test_tokenizer_has_the_real_vocabulary_size(layout: realsize.Layout) -> None:
    text = realsize.load_config(layout.family, "text_encoder")
    tokenizer = realsize.build_tokenizer(layout)
    assert len(tokenizer) == text.get("text_config", text)["vocab_size"]
    assert max(tokenizer("a fox at dawn").input_ids) < len(tokenizer)


def test_bench_smoke_runs_end_to_end(tmp_path: Path) -> None:
    from bench import engines as bench

    out = tmp_path / "engines.json"
    argv = ["--smoke", "--models-dir", str(tmp_path / "models"), "--out", str(out)]
    assert bench.main([*argv, "--preset", "flux2-klein-4b"]) == 0
    # Memory mode: the two large components built in memory, the rest loaded from disk.
    assert bench.main([*argv, "--preset", "ltx2.5-distilled", "--load", "memory"]) == 0

    report: dict[str, Any] = json.loads(out.read_text())
    assert set(report) == {"settings", "machine", "results"}
    (row,) = report["results"]
    assert row["preset"] == "ltx2.5-distilled"
    assert row["load"] == "memory"
    for key in ("build_s", "load_s", "warmup_s", "generate_s", "steps", "peak_gpu_gb"):
        assert key in row
    assert row["passes_per_step"] == 1.0
    assert row["transformer_passes"] == row["steps"]
    assert row["rendered_frames"] == 9
    assert row["audio_driven"] is False


def test_bench_smoke_runs_the_audio_driven_path(tmp_path: Path) -> None:
    """``--speech``: the real-size LTX-2.5 layout follows a speech track (voice_ids' video)."""
    from bench import engines as bench

    out = tmp_path / "engines.json"
    argv = ["--smoke", "--models-dir", str(tmp_path / "models"), "--out", str(out), "--speech"]
    assert bench.main([*argv, "--preset", "ltx2.5-distilled", "--load", "memory"]) == 0
    (row,) = json.loads(out.read_text())["results"]
    assert row["audio_driven"] is True and row["rendered_frames"] == 9
    track = bench.speech_track(2.0)
    assert track.samples.shape == (48_000,) and 0.1 < float(abs(track.samples).max()) <= 1.0


def test_bench_smoke_runs_qwen_image_edit(tmp_path: Path) -> None:
    """Memory mode (how a 64 GiB disk runs it), then a full build loaded from models_dir."""
    from bench import engines as bench

    from kinema.engines.registry import LoadOptions, load_engine

    models, out = tmp_path / "models", tmp_path / "engines.json"
    argv = ["--smoke", "--models-dir", str(models), "--out", str(out), "--load", "memory"]
    assert bench.main([*argv, "--preset", "qwen-image-edit"]) == 0
    (row,) = json.loads(out.read_text())["results"]
    assert (row["preset"], row["load"]) == ("qwen-image-edit", "memory")
    assert row["steps"] == bench.SMOKE_QWEN_STEPS
    assert row["passes_per_step"] == 2.0  # true CFG: a second pass against the negative prompt
    partial = models / "qwen-image-edit-partial"
    assert not (partial / "transformer").exists() and (partial / "vae").is_dir()

    # A disk build is laid out like the hub repository and found at <models_dir>/<preset>.
    directory = models / "qwen-image-edit"
    realsize.build_weights("qwen-image-edit", directory, "cpu", smoke=True)
    index = json.loads((directory / "model_index.json").read_text())
    assert index["_class_name"] == "QwenImageEditPlusPipeline"
    assert index["processor"] == ["transformers", "Qwen2VLProcessor"]
    for name in ("transformer", "text_encoder", "vae", "tokenizer", "scheduler"):
        assert index[name][0] in ("diffusers", "transformers")
        assert (directory / name).is_dir()
    assert (directory / "processor" / "preprocessor_config.json").is_file()
    assert (directory / "processor" / "tokenizer_config.json").is_file()
    engine: Any = load_engine("qwen-image-edit", LoadOptions(models_dir=models, device="cpu"))
    assert engine.steps == 40 and engine.true_cfg_scale == 4.0
    assert engine.pipeline.transformer.config.zero_cond_t
    assert engine.pipeline.processor.image_token_id == 151_655


def test_bench_refuses_without_cuda_unless_smoke(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch
    from bench import engines as bench

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert bench.main(["--out", str(tmp_path / "x.json")]) == 2
    assert "--smoke" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def _heads(connectors: dict[str, Any], modality: str) -> int:
    prefix = f"{modality}_connector"
    heads: int = connectors[f"{prefix}_num_attention_heads"]
    return heads * connectors[f"{prefix}_attention_head_dim"]
