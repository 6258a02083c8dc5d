from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from kinema.settings import Settings, SettingsError, load_settings

pytestmark = pytest.mark.unit


def test_defaults_are_embedded(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.database_url == f"sqlite:///{tmp_path / 'kinema.db'}"
    assert s.storage_path == tmp_path / "files"
    assert s.engines.resolved_presets() == ("tiny-ltx2", "tiny-flux2-klein")


def test_env_and_toml_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "k.toml"
    toml.write_text('[server]\nport = 9100\nhost = "127.0.0.2"\n[engines]\npreset = "static"\n')
    monkeypatch.setenv("KINEMA_SERVER__PORT", "9200")
    s = load_settings(toml, data_dir=tmp_path)
    assert s.server.port == 9200  # environment beats the file
    assert s.server.host == "127.0.0.2"
    assert s.engines.resolved_presets() == ("static-video", "static-image")


def test_unknown_setting_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, colour="blue")  # type: ignore[call-arg]


def test_a_mistyped_key_stops_start_up_naming_it_and_the_nearest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "k.toml"
    toml.write_text("[jobs]\nlease_sx = 5\n")
    with pytest.raises(
        SettingsError,
        match=r"unknown setting jobs.lease_sx in .*k.toml \(did you mean jobs.lease_s\?\)",
    ):
        load_settings(toml, data_dir=tmp_path)
    toml.write_text("[jobz]\nlease_s = 5\n")
    with pytest.raises(SettingsError, match=r"unknown setting jobz .*\(did you mean jobs\?\)"):
        load_settings(toml, data_dir=tmp_path)
    monkeypatch.setenv("KINEMA_JOBS__LEASE_SX", "5")
    with pytest.raises(
        SettingsError,
        match=r"KINEMA_JOBS__LEASE_SX \(= jobs.lease_sx\) \(did you mean jobs.lease_s\?\)",
    ):
        load_settings(data_dir=tmp_path)
    monkeypatch.delenv("KINEMA_JOBS__LEASE_SX")
    monkeypatch.setenv("KINEMA_DATA_DIRR", "x")
    with pytest.raises(SettingsError, match="did you mean data_dir"):
        load_settings()


def test_known_environment_names_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KINEMA_BILLING__IMAGE_PRICE__1K", "0.05")  # a table: any key
    monkeypatch.setenv("KINEMA_URL", "http://127.0.0.1:8000")  # the client's, not a setting
    monkeypatch.setenv("KINEMA_KEY", "kin_x")
    monkeypatch.setenv("KINEMA_JOBS__STALL_TIMEOUT_S", "30")
    assert load_settings(data_dir=tmp_path).jobs.stall_timeout_s == 30
    monkeypatch.setenv("KINEMA_SERVER__PORT", "many")
    with pytest.raises(
        SettingsError, match=r"setting server\.port: Input should be a valid integer"
    ):
        load_settings(data_dir=tmp_path)


def test_the_cli_reports_a_bad_setting_in_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from kinema.cli import main

    toml = tmp_path / "k.toml"
    toml.write_text("[server]\nprot = 1\n")
    result = CliRunner().invoke(main, ["--config", str(toml), "keys", "list"])
    assert result.exit_code == 1
    assert (
        "unknown setting server.prot" in result.output
        and "did you mean server.port" in result.output
    )
    assert "Traceback" not in result.output


def test_secret_is_generated_once_with_private_mode(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    first = s.secret()
    assert first == Settings(data_dir=tmp_path).secret()
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    assert Settings(data_dir=tmp_path, secret_key="x").secret() == b"x"  # type: ignore[arg-type]


def test_the_media_section_parses_and_reaches_the_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kinema.media.encoding import EncoderSettings
    from kinema.runners.factory import worker_config

    assert load_settings(data_dir=tmp_path).media.encoder() == EncoderSettings()
    toml = tmp_path / "k.toml"
    toml.write_text('[media]\ncodec = "h264_nvenc"\npreset = "superfast"\ncrf = 20\ncq = 23\n')
    monkeypatch.setenv("KINEMA_MEDIA__THREADS", "4")
    s = load_settings(toml, data_dir=tmp_path)
    assert s.media.encoder() == EncoderSettings(
        codec="h264_nvenc", preset="superfast", crf=20, threads=4, cq=23
    )
    assert worker_config(s).encoder == s.media.encoder()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            'codec = "x265"',
            r"media.codec: Input should be 'libx264', 'h264_nvenc' or 'auto' \(got 'x265'\)",
        ),
        (
            'preset = "quick"',
            r"setting media.preset: Input should be 'ultrafast', .* \(got 'quick'\)",
        ),
        ("crf = 60", r"setting media.crf: Input should be less than or equal to 51 \(got 60\)"),
        ("cfr = 18", r"unknown setting media.cfr in .* \(did you mean media.crf\?\)"),
    ],
)
def test_a_bad_media_setting_is_refused_naming_it(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "k.toml"
    path.write_text(f"[media]\n{toml}\n")
    with pytest.raises(SettingsError, match=message):
        load_settings(path, data_dir=tmp_path)
