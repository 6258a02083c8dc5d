from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from kinema.settings import Settings, load_settings

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


def test_secret_is_generated_once_with_private_mode(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    first = s.secret()
    assert first == Settings(data_dir=tmp_path).secret()
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    assert Settings(data_dir=tmp_path, secret_key="x").secret() == b"x"  # type: ignore[arg-type]
