"""The Ray runner's settings and deployment plan, without a cluster (tests/services/test_ray.py
runs it against one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import tests.fixtures.engines  # noqa: F401 - registers the fixture presets in this process
from kinema.runners.protocol import Started, decode_event, encode
from kinema.runners.ray_deploy import SHUTDOWN_MARGIN_S, pool_apps
from kinema.settings import Settings, SettingsError, load_settings
from tests.conftest import PLUGINS, make_settings

pytestmark = pytest.mark.unit


def _settings(tmp_path: Path, **engines: object) -> Settings:
    return make_settings(
        tmp_path,
        engines={"preset": "custom", "video_preset": "test-slow-video", **engines},
        jobs={"run_timeout_s": 900, "run_timeout_overrides": {"static-image": 1200}},
        runner={"backend": "ray", "max_replicas": 3, "downscale_delay_s": 120},
    )


def test_each_pool_is_an_application_that_scales_from_zero(tmp_path: Path) -> None:
    video, image = pool_apps(_settings(tmp_path, image_preset="static-image", plugins=PLUGINS))
    assert (video.name, video.task) == ("kinema-image-to-video", "image-to-video")
    assert image.name == "kinema-image-to-image"
    options = video.deployment_options()
    assert options["name"] == "image-to-video"
    assert options["max_ongoing_requests"] == 1
    assert options["ray_actor_options"] == {"num_gpus": 1, "num_cpus": 1.0}
    scaling = options["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["initial_replicas"]) == (0, 0)
    assert scaling["max_replicas"] == 3
    assert scaling["downscale_to_zero_delay_s"] == 120
    # Longer than the longest run of any preset (here an override), so a replica told to
    # stop finishes the job it has.
    assert options["graceful_shutdown_timeout_s"] == 1200 + SHUTDOWN_MARGIN_S
    assert video.config.worker.presets == ("test-slow-video", "static-image")  # + composer
    assert video.config.cancel_grace_s == 30


def test_replicas_take_no_gpu_when_the_engines_run_on_the_cpu(tmp_path: Path) -> None:
    settings = _settings(tmp_path, image_preset="static-image", plugins=PLUGINS, device="cpu")
    assert {app.num_gpus for app in pool_apps(settings)} == {0}


def test_a_ray_client_address_is_a_one_line_settings_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KINEMA_RUNNER__RAY_ADDRESS", "ray://10.0.0.5:10001")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "\n" not in str(err.value)
    assert "runner.ray_address" in str(err.value) and "host:6379" in str(err.value)


def test_a_mistyped_runner_setting_names_the_nearest_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KINEMA_RUNNER__MAX_REPLICA", "2")
    with pytest.raises(SettingsError, match=r"did you mean runner\.max_replicas\?"):
        load_settings()


def test_a_replica_run_begins_with_started_on_the_wire() -> None:
    event = Started(job_id="j", cold=True, load_s=2.5)
    assert decode_event(encode(event)) == event


def test_the_embedded_runner_never_imports_ray(tmp_path: Path) -> None:
    """Without the ray extra the local runner works: Ray is imported only for its backend,
    and asking for that backend without it installed is a settings error naming the extra."""
    code = (
        "import sys\n"
        "sys.modules['ray'] = None  # as if not installed\n"
        "from kinema.runners.factory import open_runner\n"
        "from kinema.settings import Settings, SettingsError\n"
        f"local = Settings(data_dir={str(tmp_path)!r}, engines={{'preset': 'static'}})\n"
        "assert open_runner(local) is not None\n"
        f"ray = Settings(data_dir={str(tmp_path)!r}, engines={{'preset': 'static'}},\n"
        "               runner={'backend': 'ray'})\n"
        "try:\n"
        "    open_runner(ray)\n"
        "except SettingsError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert 'pip install "kinema[ray]"' in out


def test_serve_runner_option_overrides_the_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn
    from click.testing import CliRunner

    import kinema.api.app
    from kinema.cli import main

    seen: list[Settings] = []
    monkeypatch.setattr(kinema.api.app, "create_app", lambda settings: seen.append(settings))
    monkeypatch.setattr(uvicorn.Server, "run", lambda _, sockets: [s.close() for s in sockets])
    args = ["--data-dir", str(tmp_path), "serve", "--port", "0", "--runner", "ray"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert seen[0].runner.backend == "ray"


def test_the_serve_config_builder_names_the_configured_pools(tmp_path: Path) -> None:
    from kinema.runners.ray_deploy import build

    config = tmp_path / "kinema.toml"
    config.write_text(f'data_dir = "{tmp_path}"\n[engines]\npreset = "static"\n')
    with pytest.raises(ValueError, match="the pools are: image-to-video, image-to-image"):
        build({"pool": "video", "config": str(config)})
