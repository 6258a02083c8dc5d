"""The job spec: one typed, versioned description of a generation, built by the API from a
validated request and consumed by the runner. It is stored with the job (the ``params`` column)
and travels to the worker unchanged, so what ran is always what was admitted.

Everything is resolved at submit: the contract size, the exact frame count, the shots (prompts
and seconds, ``multi_prompt`` or the ``intelligence`` split), the seed (drawn once when the client
gave none, so a retry renders the same video), the engine preset, and every input image as a
storage key. A runner needs nothing but this and the storage.

Bump :data:`SPEC_VERSION` when a change is not backwards compatible and keep reading the older
version (``_legacy`` reads the untyped parameters of jobs queued before the spec existed).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from kinema.engines.plan import split_prompt

SPEC_VERSION: Literal[1] = 1

ImageFormat = Literal["png", "jpeg", "webp"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ElementInputs(_Frozen):
    """One ``@Element<n>``: its frontal image and reference images, as storage keys."""

    frontal: str
    references: tuple[str, ...] = ()


class ShotSpec(_Frozen):
    """One generation of a video: its final prompt and its whole seconds."""

    prompt: str
    duration_s: int = Field(ge=1)
    dialogue: str | None = None
    """The text whose quoted lines the shot speaks with ``voice_ids``: a ``multi_prompt``
    shot's own prompt (the request's prompt, prefixed to every shot as context, is not spoken
    again in each). None: :attr:`prompt`."""

    @property
    def script(self) -> str:
        return self.prompt if self.dialogue is None else self.dialogue


class _Spec(_Frozen):
    version: Literal[1] = SPEC_VERSION
    preset: str | None = None
    """The engine preset chosen at submit; None (jobs queued before presets were recorded):
    whichever preset serves the task."""
    prompt: str
    """The request's prompt as given ("" when only shots drive a video)."""
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    seed: int = Field(ge=0)
    elements: tuple[ElementInputs, ...] = ()

    def input_keys(self) -> list[str]:
        """Every input's storage key."""
        keys = [*self._own_inputs()]
        for element in self.elements:
            keys += [element.frontal, *element.references]
        return keys

    def _own_inputs(self) -> list[str]:
        raise NotImplementedError


class VideoSpec(_Spec):
    task: Literal["image-to-video"] = "image-to-video"
    negative_prompt: str
    aspect_ratio: str
    fps: int = Field(gt=0)
    duration_s: int = Field(ge=1)
    num_frames: int = Field(gt=0)
    """Exactly ``duration_s × fps``."""
    cfg_scale: float
    generate_audio: bool
    """Audio is generated (and paid for): asked for, and the engine can."""
    audio_requested: bool | None = None
    """What the request asked (None: stored before this was recorded)."""
    shot_type: str
    shots: tuple[ShotSpec, ...] = Field(min_length=1)
    """One generation each, hard cuts; seconds add up to ``duration_s``."""
    start_image: str
    end_image: str | None = None
    voice_references: tuple[str, ...] = ()
    """Storage keys of the ``voice_ids``' cleaned reference clips, in order (voice n is entry
    n - 1): the shots' scripts are spoken in them and the video follows that speech. Not
    inputs of the job: the voices outlive it."""

    def _own_inputs(self) -> list[str]:
        return [self.start_image] + ([self.end_image] if self.end_image else [])


class ImageSpec(_Spec):
    task: Literal["image-to-image"] = "image-to-image"
    aspect_ratio: str
    resolution: str
    output_format: ImageFormat
    image: str

    def _own_inputs(self) -> list[str]:
        return [self.image]


JobSpec = Annotated[VideoSpec | ImageSpec, Field(discriminator="task")]
_ADAPTER: TypeAdapter[VideoSpec | ImageSpec] = TypeAdapter(JobSpec)


def dump_spec(spec: VideoSpec | ImageSpec) -> dict[str, Any]:
    """The spec as stored (JSON-ready)."""
    return spec.model_dump(mode="json")


def load_spec(stored: dict[str, Any], inputs: dict[str, Any] | None = None) -> JobSpec:
    """A stored spec; ``inputs`` (the job's old input column) reads the parameters of jobs
    stored before the spec was versioned."""
    if "version" not in stored:
        stored = _legacy(stored, inputs or {})
    return _ADAPTER.validate_python(stored)


def _legacy(params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Untyped parameters + flat input names (``start_image``, ``element1_frontal``, …) → v1."""
    task = "image-to-image" if "output_format" in params else "image-to-video"
    elements = []
    n = 1
    while (frontal := inputs.get(f"element{n}_frontal")) is not None:
        refs = inputs.get(f"element{n}_references", [])
        elements.append({"frontal": frontal, "references": refs})
        n += 1
    common = {
        "version": SPEC_VERSION,
        "prompt": params.get("prompt") or "",
        "width": params["width"],
        "height": params["height"],
        "seed": params.get("seed") or 0,
        "elements": elements,
    }
    if task == "image-to-image":
        image_keys = ("aspect_ratio", "resolution", "output_format")
        return {
            **common,
            **{k: params[k] for k in image_keys},
            "task": task,
            "image": inputs["image"],
        }
    if params.get("shots"):
        shots = [
            {"prompt": f"{common['prompt']} {s['prompt']}".strip(), "duration_s": s["duration_s"]}
            for s in params["shots"]
        ]
    elif params.get("shot_type") == "intelligence":
        split = split_prompt(common["prompt"], params["duration_s"])
        shots = [{"prompt": p, "duration_s": s} for p, s in split]
    else:
        shots = [{"prompt": common["prompt"], "duration_s": params["duration_s"]}]
    keep = ("negative_prompt", "aspect_ratio", "fps", "duration_s", "num_frames", "cfg_scale")
    return {
        **common,
        **{k: params[k] for k in keep},
        "task": task,
        "generate_audio": params["generate_audio"],
        "shot_type": params.get("shot_type", "customize"),
        "shots": shots,
        "start_image": inputs["start_image"],
        "end_image": inputs.get("end_image"),
    }
