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
}
MODELS = [
    (layout, component)
    for layout in (realsize.LTX25, realsize.FLUX2_KLEIN_4B)
    for component in (*layout.models, *layout.extras)
]


def test_every_shipped_config_has_a_band() -> None:
    shipped = {
        (path.parent.name, path.stem)
        for path in realsize.CONFIGS.glob("*/*.json")
        if path.stem != "scheduler"
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
