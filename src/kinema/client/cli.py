"""``kinema i2v`` / ``i2i`` / ``status`` / ``result`` / ``cancel`` / ``voice``: generation from
the terminal, built on :mod:`kinema.client` (so it needs a running server, not the engines).

The server and key come from ``--url`` / ``--key`` or ``KINEMA_URL`` / ``KINEMA_KEY``. Progress
is drawn on stderr (queued → position → generating, with the phase when the server reports one
→ download); stdout gets only what a script wants: the saved path, a request id, or JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, get_args

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from kinema import __version__
from kinema.api.schemas import (
    ImageAspectRatio,
    ImageOutputFormat,
    ImageResolution,
    ShotType,
    VideoAspectRatio,
)
from kinema.client import _core
from kinema.client.builders import Element, GenerationRequest, Shot, image_to_image, image_to_video
from kinema.client.errors import GenerationFailed, KinemaClientError
from kinema.client.sync import Client, Job

__all__ = ["COMMANDS", "describe", "parse_element", "parse_shot", "register"]

F = TypeVar("F", bound=Callable[..., Any])


def _connection(command: F) -> F:
    """The ``--url`` / ``--key`` options every client command takes."""
    command = click.option(
        "--key",
        envvar="KINEMA_KEY",
        help="API key (else $KINEMA_KEY).",
    )(command)
    return click.option(
        "--url",
        envvar="KINEMA_URL",
        default="http://127.0.0.1:8000",
        show_default=True,
        help="Server (else $KINEMA_URL).",
    )(command)


@contextmanager
def _client(url: str, key: str | None) -> Iterator[Client]:
    """A client; an SDK error becomes a one-line CLI error (exit status 1)."""
    if not key:
        raise click.UsageError("no API key: pass --key or set KINEMA_KEY")
    try:
        with Client(url, key) as client:
            yield client
    except KinemaClientError as exc:
        message = exc.message
        if isinstance(exc, GenerationFailed) and not message.startswith("generation failed"):
            message = "generation failed: " + message
        raise click.ClickException(message) from exc


def parse_element(value: str) -> Element:
    """``FRONTAL[,REF...]`` as an :class:`Element`; a ``data:`` URI keeps its own comma."""
    parts: list[str] = []
    for piece in value.split(","):
        if parts and parts[-1].startswith("data:") and "," not in parts[-1]:
            parts[-1] += "," + piece
        else:
            parts.append(piece)
    if not parts[0]:
        raise click.BadParameter(f"expected FRONTAL[,REF...] (got {value!r})")
    return Element(parts[0], parts[1:])


def parse_shot(value: str) -> Shot:
    """``SECONDS:PROMPT`` as a :class:`Shot`."""
    seconds, sep, prompt = value.partition(":")
    if not sep or not seconds.strip().isdigit():
        raise click.BadParameter(f"expected SECONDS:PROMPT, e.g. '3:a cat jumps' (got {value!r})")
    return Shot(prompt.strip(), int(seconds))


def describe(progress: _core.Progress) -> str:
    """One line for a status reading, as the progress display shows it."""
    if progress.status == "QUEUED":
        ahead = progress.queue_position
        return "queued" if ahead is None else f"queued, {ahead} ahead"
    if progress.status == "PROCESSING":
        if progress.phase is None:
            return "generating"
        share = progress.phase_progress
        return f"generating: {progress.phase}" + ("" if share is None else f" {share:.0%}")
    if progress.status == "FAILED":
        return f"failed: {progress.error or 'unknown error'}"
    return progress.status.lower()


class _BytesColumn(DownloadColumn):
    """Bytes so far / total, on the download's row only (the job's row counts 0..1)."""

    def render(self, task: Task) -> Text:
        return super().render(task) if task.fields.get("download") else Text("")


class _Display:
    """The live display on stderr: one bar for the job, one for the download."""

    def __init__(self, quiet: bool) -> None:
        self.bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            _BytesColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=quiet,
        )
        self.job: TaskID | None = None
        self.download: TaskID | None = None

    def __enter__(self) -> _Display:
        self.bar.start()
        self.job = self.bar.add_task("submitting", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def status(self, progress: _core.Progress) -> None:
        assert self.job is not None
        done = 1.0 if progress.status == "COMPLETED" else progress.progress
        self.bar.update(
            self.job,
            description=describe(progress),
            total=None if done is None else 1.0,
            completed=done or 0.0,
        )

    def downloaded(self, done: int, total: int | None) -> None:
        if self.download is None:
            self.download = self.bar.add_task("downloading", total=total, download=True)
        self.bar.update(self.download, completed=done, total=total)


def _generate(
    url: str,
    key: str | None,
    request: GenerationRequest,
    output: Path,
    detach: bool,
    timeout: float | None,
    quiet: bool,
) -> None:
    with _client(url, key) as client:
        job = client.submit(request)
        if detach:
            click.echo(job.request_id)
            return
        _follow(job, output, timeout, quiet)


def _follow(job: Job, output: Path, timeout: float | None, quiet: bool) -> None:
    """Wait with the live display, download to ``output``, print its path."""
    click.echo(f"request {job.request_id}", err=True)
    with _Display(quiet) as display:
        result = job.wait(timeout=timeout, on_progress=display.status)
        result.save(output, on_progress=display.downloaded)
    cost = result.metrics.get("cost")
    left = result.metrics.get("remaining_credits")
    click.echo(f"saved {output} (cost {cost}, {left} credits left)", err=True)
    click.echo(str(output))


def _generation_options(command: F) -> F:
    """Options that both generation commands take, outermost last."""
    for option in (
        click.option("--quiet", "-q", is_flag=True, help="No progress display."),
        click.option("--timeout", type=float, help="Cancel the job after this many seconds."),
        click.option(
            "--async", "detach", is_flag=True, help="Print the request id and return at once."
        ),
        click.option("--webhook", help="URL that gets a signed POST when the request ends."),
        click.option("--seed", type=click.IntRange(0, 2**32 - 1), help="Fixed random seed."),
        click.option(
            "--element",
            "elements",
            multiple=True,
            metavar="FRONTAL[,REF...]",
            help="A subject (@Element1, @Element2, ...): its frontal image, then up to 3 more "
            "views. Repeatable (at most 3).",
        ),
        click.option("--prompt", "-p", help="What to generate."),
        _connection,
    ):
        command = option(command)
    return command


@click.command("i2v")
@click.argument("image")
@_generation_options
@click.option("--end-image", help="Last frame (path, URL or data: URI).")
@click.option("--aspect-ratio", type=click.Choice(get_args(VideoAspectRatio)))
@click.option("--duration", type=click.IntRange(3, 15), help="Seconds (default 5).")
@click.option("--cfg-scale", type=click.FloatRange(0, 1), help="Prompt adherence (default 0.5).")
@click.option("--negative-prompt", help="What to avoid.")
@click.option("--no-audio", is_flag=True, help="No audio track.")
@click.option(
    "--shot",
    "shots",
    multiple=True,
    metavar="SECONDS:PROMPT",
    help="One shot of a multi-shot video; repeatable (at most 5, adding up to --duration).",
)
@click.option("--shot-type", type=click.Choice(get_args(ShotType)))
@click.option("--voice-id", "voice_ids", multiple=True, help="A voice (at most 2); repeatable.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("output.mp4"))
def i2v(
    image: str,
    url: str,
    key: str | None,
    prompt: str | None,
    elements: tuple[str, ...],
    seed: int | None,
    webhook: str | None,
    detach: bool,
    timeout: float | None,
    quiet: bool,
    end_image: str | None,
    aspect_ratio: str | None,
    duration: int | None,
    cfg_scale: float | None,
    negative_prompt: str | None,
    no_audio: bool,
    shots: tuple[str, ...],
    shot_type: str | None,
    voice_ids: tuple[str, ...],
    output: Path,
) -> None:
    """Image to video: animate IMAGE (a path, URL or data: URI) into an MP4."""
    request = _built(
        lambda: image_to_video(
            image,
            prompt,
            end_image=end_image,
            aspect_ratio=aspect_ratio,
            duration=duration,
            cfg_scale=cfg_scale,
            elements=[parse_element(e) for e in elements],
            generate_audio=False if no_audio else None,
            multi_prompt=[parse_shot(s) for s in shots],
            negative_prompt=negative_prompt,
            shot_type=shot_type,
            voice_ids=voice_ids,
            seed=seed,
            webhook=webhook,
        )
    )
    _generate(url, key, request, output, detach, timeout, quiet)


@click.command("i2i")
@click.argument("image")
@_generation_options
@click.option("--aspect-ratio", type=click.Choice(get_args(ImageAspectRatio)))
@click.option("--resolution", type=click.Choice(get_args(ImageResolution)))
@click.option("--format", "output_format", type=click.Choice(get_args(ImageOutputFormat)))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Default output.<format>.")
def i2i(
    image: str,
    url: str,
    key: str | None,
    prompt: str | None,
    elements: tuple[str, ...],
    seed: int | None,
    webhook: str | None,
    detach: bool,
    timeout: float | None,
    quiet: bool,
    aspect_ratio: str | None,
    resolution: str | None,
    output_format: str | None,
    output: Path | None,
) -> None:
    """Image to image: transform IMAGE (a path, URL or data: URI) as --prompt says."""
    if not prompt:
        raise click.UsageError("--prompt is required")
    request = _built(
        lambda: image_to_image(
            image,
            prompt,
            aspect_ratio=aspect_ratio,
            elements=[parse_element(e) for e in elements],
            output_format=output_format,
            resolution=resolution,
            seed=seed,
            webhook=webhook,
        )
    )
    target = output or Path(f"output.{output_format or 'png'}")
    _generate(url, key, request, target, detach, timeout, quiet)


def _built(build: Callable[[], GenerationRequest]) -> GenerationRequest:
    """The request, or the local check's message as a CLI error."""
    try:
        return build()
    except KinemaClientError as exc:
        raise click.UsageError(exc.message) from exc


def _print_json(body: Any) -> None:
    click.echo(json.dumps(body, indent=2))


@click.command("status")
@click.argument("request_id")
@_connection
def status(request_id: str, url: str, key: str | None) -> None:
    """Print a request's status (JSON, as the status URL answers)."""
    with _client(url, key) as client:
        _print_json(dict(client.job(request_id).status().raw))


@click.command("result")
@click.argument("request_id")
@_connection
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Download the output here.")
@click.option("--wait", "wait", is_flag=True, help="Wait (with progress) until it ends.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
def result(
    request_id: str, url: str, key: str | None, output: Path | None, wait: bool, quiet: bool
) -> None:
    """Print a request's result (JSON), or with -o save its output."""
    with _client(url, key) as client:
        job = client.job(request_id)
        if wait and output is not None:
            _follow(job, output, None, quiet)
            return
        got = job.wait() if wait else job.result()
        if output is None:
            _print_json(dict(got.raw))
            return
        if got.output is None:
            raise click.ClickException(f"request {request_id} is {got.status}: no output yet")
        click.echo(str(got.save(output)))


@click.command("cancel")
@click.argument("request_id")
@_connection
def cancel(request_id: str, url: str, key: str | None) -> None:
    """Cancel a request (queued: at once; running: at its next step); refunded."""
    with _client(url, key) as client:
        _print_json(dict(client.job(request_id).cancel().raw))


@click.command("voice")
@click.argument("sample")
@_connection
@click.option("--name", help="A label for the voice (at most 20 characters).")
def voice(sample: str, url: str, key: str | None, name: str | None) -> None:
    """Create a voice from SAMPLE (mp3, wav, mp4 or mov; 5-30 s of one clean speaker) and print
    its id, for `kinema i2v --voice-id`."""
    with _client(url, key) as client:
        click.echo(client.create_voice(sample, name))


COMMANDS = (i2v, i2i, status, result, cancel, voice)


def register(group: click.Group) -> None:
    """Add the client commands and ``--version`` to the ``kinema`` command."""
    for command in COMMANDS:
        group.add_command(command)
    click.version_option(__version__, prog_name="kinema", message="%(prog)s %(version)s")(group)
