"""Where a preset's weights are, decided before loading so that missing weights stop start-up
with a message that says what to download and where to put it (never the first request).

Order: ``LoadOptions.source`` (an explicit hub id or directory) → ``<models_dir>/<preset>`` when it
holds the marker file (a diffusers ``model_index.json``; a transformers-style repository's
``config.json``) → the hub id when the Hugging Face cache already has it (works with
``HF_HUB_OFFLINE=1``). Nothing is downloaded at run time.
"""

from __future__ import annotations

from pathlib import Path

from kinema.engines.registry import LoadOptions


class WeightsMissing(FileNotFoundError):
    pass


def resolve(
    preset: str, hub_id: str, options: LoadOptions, *, marker: str = "model_index.json"
) -> str:
    if options.source:
        return options.source
    local = options.models_dir / preset
    if (local / marker).is_file():
        return str(local)
    if _cached(hub_id, marker):
        return hub_id
    raise WeightsMissing(
        f"weights for engine preset {preset!r} not found: download them with "
        f"`hf download {hub_id} --local-dir {local}` (or point engines.models_dir, or HF_HOME, "
        "at a copy that has them)"
    )


def _cached(hub_id: str, marker: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub_id, marker)
    return isinstance(found, str) and Path(found).is_file()
