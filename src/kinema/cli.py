"""The ``kinema`` command: serve the API, manage keys and credits."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from kinema.billing.keys import from_micros
from kinema.billing.service import KeyService
from kinema.client.cli import register as register_client_commands
from kinema.datadir import announce, make_private, stray_default
from kinema.errors import KinemaError
from kinema.settings import Settings, SettingsError, load_settings
from kinema.store.db import open_database

T = TypeVar("T")


def _no_stray_database(settings: Settings) -> None:
    """Stop a command that would create a new database in the default data directory (which
    follows the current directory) while a running server uses another one."""
    if "data_dir" in settings.model_fields_set or settings.database.url:
        return  # chosen explicitly (--data-dir, KINEMA_DATA_DIR, the settings file), or no SQLite
    message = stray_default(settings.data_dir)
    if message is not None:
        raise click.ClickException(message)


@click.group()
@click.option(
    "--config",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="TOML settings file (else $KINEMA_CONFIG).",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where the database, outputs and models live (default ./kinema-data, in the current "
    "directory).",
)
@click.pass_context
def main(ctx: click.Context, config: Path | None, data_dir: Path | None) -> None:
    """Kinema: self-hosted image-to-video and image-to-image behind the hosted API contract."""
    overrides: dict[str, Any] = {"data_dir": data_dir} if data_dir else {}
    try:
        ctx.obj = load_settings(config, **overrides)
    except SettingsError as exc:  # one line, no traceback
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--host", help="Bind address (default 127.0.0.1).")
@click.option("--port", type=int, help="Port (default 8000).")
@click.option(
    "--preset",
    type=click.Choice(["tiny", "static", "production", "custom"]),
    help="Engines: tiny (random-weight diffusers models on CPU), static (no torch), "
    "production (ltx2.5-distilled + flux2-klein-4b, real weights), "
    "custom (engines.video_preset / engines.image_preset).",
)
@click.option(
    "--runner",
    "backend",
    type=click.Choice(["local", "ray"]),
    help="Where jobs run: local worker processes, or the Ray Serve cluster at "
    "runner.ray_address (overrides runner.backend).",
)
@click.pass_obj
def serve(
    settings: Settings,
    host: str | None,
    port: int | None,
    preset: str | None,
    backend: str | None,
) -> None:
    """Run the API with its runner (embedded defaults: SQLite, local files, local workers)."""
    import uvicorn

    from kinema.api.access import AccessLog, log_config
    from kinema.api.app import create_app
    from kinema.api.serving import ListenError, Server, listen_socket, uvicorn_options

    server = settings.server.model_copy(
        update={k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    )
    engines = settings.engines.model_copy(update={"preset": preset} if preset else {})
    runner = settings.runner.model_copy(update={"backend": backend} if backend else {})
    settings = settings.model_copy(update={"server": server, "engines": engines, "runner": runner})
    _no_stray_database(settings)
    # Bound first: a port in use is one line now, not an error after the engines have loaded.
    try:
        sock = listen_socket(server.host, server.port)
    except ListenError as exc:
        raise click.ClickException(str(exc)) from None
    make_private(settings.data_dir)
    # The access log is written after each answer (AccessLog), not by uvicorn before it.
    app = AccessLog(create_app(settings))
    config = uvicorn.Config(
        app,
        host=server.host,
        port=server.port,
        log_level="info",
        log_config=log_config(server.log_format),
        access_log=False,
        **uvicorn_options(),  # limits on slow and oversized request heads, keep-alive
    )
    host, bound_port = sock.getsockname()[:2]
    forget = announce(settings.data_dir, f"http://{host}:{bound_port}")
    try:
        Server(config, on_shutdown=forget).run(sockets=[sock])
    finally:
        forget()  # when start-up failed (no shutdown then)


@main.command("migrate")
@click.pass_obj
def migrate_cmd(settings: Settings) -> None:
    """Create or upgrade the database schema."""

    async def run() -> None:
        db = open_database(settings.database_url)
        await db.migrate()
        await db.dispose()

    _no_stray_database(settings)
    make_private(settings.data_dir)
    asyncio.run(run())
    click.echo(f"database at the newest schema: {settings.database_url}")


def _with_keys(settings: Settings, action: Callable[[KeyService], Awaitable[T]]) -> T:
    async def run() -> T:
        db = open_database(settings.database_url)
        try:
            await db.migrate()
            return await action(KeyService(db, settings.secret()))
        finally:
            await db.dispose()

    _no_stray_database(settings)
    make_private(settings.data_dir)
    try:
        return asyncio.run(run())
    except KinemaError as exc:
        raise click.ClickException(exc.message) from exc


@main.group()
def keys() -> None:
    """Create, list and revoke API keys."""


@keys.command("create")
@click.option("--name", default="", help="A label for the key.")
@click.option("--credits", "credits_", type=float, default=None, help="Starting credits.")
@click.option("--rate-limit", default=None, help="Per-key limit, e.g. '10/minute;500/day'.")
@click.option("--model", "models", multiple=True, help="Restrict to these model slugs.")
@click.pass_obj
def keys_create(
    settings: Settings,
    name: str,
    credits_: float | None,
    rate_limit: str | None,
    models: tuple[str, ...],
) -> None:
    """Create a key and print it (shown this once only)."""
    from kinema.billing.ratelimit import parse_rule

    if rate_limit:
        try:
            parse_rule(rate_limit)
        except KinemaError as exc:
            raise click.BadParameter(exc.message, param_hint="--rate-limit") from exc
    known = _model_slugs()
    for model in models:
        if model not in known:
            raise click.BadParameter(
                f"unknown model {model!r}; the models are: {', '.join(known)}",
                param_hint="--model",
            )
    amount = settings.billing.default_credits if credits_ is None else credits_
    new = _with_keys(
        settings,
        lambda k: k.create(
            name=name, credits=amount, rate_limit=rate_limit, models=list(models) or None
        ),
    )
    click.echo(new.key)
    click.echo(
        f"id {new.record.id}, {amount:g} credits; store the key now, it is not shown again",
        err=True,
    )


def _model_slugs() -> list[str]:
    """Every slug a key can be restricted to (``--model``)."""
    from kinema.api.endpoints import ENDPOINTS
    from kinema.api.service import VOICE_SLUG

    return [*ENDPOINTS, VOICE_SLUG]


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as left-aligned columns under ``header`` (plain text: pipes into grep and awk)."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


@keys.command("list")
@click.pass_obj
def keys_list(settings: Settings) -> None:
    """List keys: id, prefix (either names the key in other commands), name, credits, the
    models it may use, its rate limit, state and creation date."""
    rows: list[tuple[str, ...]] = []
    for record in _with_keys(settings, lambda k: k.list()):
        created = dt.datetime.fromtimestamp(record.created_at, tz=dt.UTC).strftime("%Y-%m-%d")
        rows.append(
            (
                record.id,
                record.prefix + "…",
                record.name or "-",
                f"{from_micros(record.balance_micros):.4f}",
                ",".join(record.models) if record.models else "all",
                record.rate_limit or f"default ({settings.rate_limit.default})",
                "revoked" if record.revoked_at else "active",
                created,
            )
        )
    header = ("ID", "PREFIX", "NAME", "CREDITS", "MODELS", "RATE LIMIT", "STATE", "CREATED")
    for line in _table(header, rows):
        click.echo(line)
    if not rows:
        click.echo("(no keys yet: kinema keys create)", err=True)


@keys.command("revoke")
@click.argument("key")
@click.pass_obj
def keys_revoke(settings: Settings, key: str) -> None:
    """Revoke KEY (the key, its id or its prefix as `keys list` shows it)."""
    record = _with_keys(settings, lambda k: k.revoke(key))
    click.echo(f"revoked {record.id} ({record.prefix}…)")


@main.group()
def credits() -> None:
    """Grant credits and show balances."""


@credits.command("add")
@click.argument("key")
@click.argument("amount", type=float)
@click.option("--note", default="operator grant")
@click.pass_obj
def credits_add(settings: Settings, key: str, amount: float, note: str) -> None:
    """Add AMOUNT credits to KEY (negative to take)."""
    balance = _with_keys(settings, lambda k: k.add_credits(key, amount, note))
    click.echo(f"{from_micros(balance):g}")


@credits.command("show")
@click.argument("key")
@click.pass_obj
def credits_show(settings: Settings, key: str) -> None:
    """Print KEY's balance."""

    async def show(k: KeyService) -> int:
        return (await k.resolve(key)).balance_micros

    click.echo(f"{from_micros(_with_keys(settings, show)):g}")


@main.group("ray")
def ray_group() -> None:
    """The Ray Serve runner's applications on the cluster at runner.ray_address."""


@ray_group.command("deploy")
@click.pass_obj
def ray_deploy(settings: Settings) -> None:
    """Deploy or update one Serve application per pool, then exit."""
    from kinema.runners.base import RunnerLost
    from kinema.runners.factory import RAY_EXTRA
    from kinema.runners.placement import PlacementError

    try:
        from kinema.runners.ray import deploy_pools
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "ray":
            raise
        raise click.ClickException(RAY_EXTRA) from exc
    try:
        apps = asyncio.run(deploy_pools(settings))
    except (RunnerLost, PlacementError, KinemaError) as exc:
        raise click.ClickException(str(exc)) from exc
    for app in apps:
        gpus = f"{app.num_gpus} GPU" + ("s" if app.num_gpus != 1 else "")
        click.echo(
            f"{app.name}: {', '.join(app.config.worker.presets)}; {gpus} per replica, "
            f"0..{app.max_replicas} replicas"
        )
    click.echo(f"deployed on {settings.runner.ray_address}", err=True)


register_client_commands(main)  # i2v, i2i, status, result, cancel, voice; --version
