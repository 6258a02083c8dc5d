"""The web playground end to end: ``kinema serve --preset tiny`` on 127.0.0.1 and Debian's
headless ``chromium`` driven by Playwright (never a downloaded browser). The page is filled as a
user would: key, image through the file input, prompt, duration; the ``<video>`` it shows must
have the contracted size and duration, the ``<img>`` of an image-to-image run its contracted size.
A screenshot of each is kept (the pytest tmp dir, and ``$TEST_ARTIFACTS_DIR`` when set)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import httpx
import pytest

from tests.fixtures.served import ROOT, Server, serving

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page, Route

# One served process per module, on its own SQLite database.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.engines,
    pytest.mark.embedded_only,
    pytest.mark.timeout(240),
]
CHROMIUM = "/usr/bin/chromium"
SAMPLE = ROOT / "examples" / "sample.png"
VIDEO = "kling-3-standard-image2video"
IMAGE = "kling-3-image2image"


def _unavailable(what: str) -> NoReturn:
    if os.environ.get("CI"):
        raise RuntimeError(f"{what} is required in CI")
    pytest.skip(f"{what} is needed: apt-get install chromium; pip install playwright")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("playground"), "tiny", credits=5) as server:
        yield server


# The async API: the sync one runs a loop of its own, which the suite's async fixtures refuse.
@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    try:
        from playwright.async_api import Error, async_playwright
    except ImportError:
        _unavailable("Playwright")
    if shutil.which(CHROMIUM) is None:
        _unavailable(f"chromium ({CHROMIUM})")
    async with async_playwright() as pw:
        try:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        except Error as exc:
            _unavailable(f"a launchable chromium ({exc})")
        yield browser
        await browser.close()


@pytest.fixture
async def page(browser: Browser, server: Server) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 1000})
    page = await context.new_page()
    outside: list[str] = []
    page.on(
        "request",
        lambda r: (
            None if r.url.startswith((server.url, "data:", "blob:")) else outside.append(r.url)
        ),
    )
    await page.goto(server.url + "/")  # redirected to /playground
    assert page.url == server.url + "/playground"
    yield page
    await context.close()
    assert outside == [], "the playground loaded something from outside Kinema"


async def _keep_screenshot(page: Page, tmp_path: Path, name: str) -> None:
    _keep(await page.screenshot(full_page=True), tmp_path, name)


def _keep(png: bytes, tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(png)
    # Not KINEMA_-prefixed: kinema refuses unknown KINEMA_* variables, and the server inherits ours.
    target = os.environ.get("TEST_ARTIFACTS_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        (Path(target) / name).write_bytes(png)


async def _fill(page: Page, server: Server, model: str, prompt: str) -> None:
    await page.fill("#api-key", server.key)
    await page.check(f"input[name=model][value={model}]")
    await page.set_input_files("#image-file", str(SAMPLE))
    await page.fill("#prompt", prompt)


async def _history(page: Page) -> str:
    return await page.inner_text("#history")


def test_page_and_assets_are_served_without_a_key_and_load_nothing_from_outside(
    server: Server,
) -> None:
    r = httpx.get(server.url + "/")
    assert r.status_code == 307 and r.headers["location"] == "/playground"
    r = httpx.get(server.url + "/playground")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert sorted(assets) == ["playground/assets/playground.css", "playground/assets/playground.js"]
    for asset in assets:
        body = httpx.get(f"{server.url}/{asset}")
        assert body.status_code == 200, asset
        assert not re.search(r"https?://(?!…)", body.text), f"{asset} names an outside URL"
    assert httpx.get(server.url + "/playground/assets/../app.py").status_code == 404
    assert httpx.get(server.url + "/playground/assets/x.js").status_code == 404


async def test_a_tiny_video_plays_at_the_contracted_size_and_duration(
    page: Page, server: Server, tmp_path: Path
) -> None:
    await _fill(page, server, VIDEO, "a red ball rolls across the table")
    await page.fill("#duration", "3")
    await page.click("#submit")
    await page.wait_for_function(
        "() => { const v = document.querySelector('#result video');"
        " return v && v.readyState >= 1 }",
        timeout=120_000,
    )
    size = await page.evaluate(
        "() => { const v = document.querySelector('#result video');"
        " return [v.videoWidth, v.videoHeight, v.duration] }"
    )
    assert size[:2] == [1920, 1080]  # 16:9, the default aspect ratio
    assert size[2] == pytest.approx(3.0, abs=0.1)
    assert await page.get_attribute("#download", "href") == await page.get_attribute(
        "#result video", "src"
    )
    assert await page.get_attribute("#status", "data-status") == "COMPLETED"
    assert "COMPLETED" in await _history(page) and VIDEO in await _history(page)
    await _keep_screenshot(page, tmp_path, "playground-video.png")


async def test_an_image_shows_at_its_contracted_size_and_reloads_from_the_history(
    page: Page, server: Server, tmp_path: Path
) -> None:
    await _fill(page, server, IMAGE, "the same scene at night")
    await page.select_option("#aspect-ratio", "1:1")
    await page.click("#submit")
    await page.wait_for_function(
        "() => { const i = document.querySelector('#result img'); return i && i.complete"
        " && i.naturalWidth > 0 }",
        timeout=60_000,
    )
    size = await page.evaluate(
        "() => { const i = document.querySelector('#result img');"
        " return [i.naturalWidth, i.naturalHeight] }"
    )
    assert size == [1024, 1024]  # 1:1 at 1K
    await _keep_screenshot(page, tmp_path, "playground-image.png")
    # This browser's history survives a reload; a click brings its result back.
    await page.reload()
    assert await page.input_value("#api-key") == server.key
    await page.click("#history li:first-child button")
    await page.wait_for_selector("#result img")
    assert IMAGE in await _history(page)


async def test_an_api_error_is_shown_verbatim(page: Page, server: Server) -> None:
    await _fill(page, server, VIDEO, "fine")
    await page.evaluate("() => document.querySelector('#prompt').removeAttribute('maxlength')")
    await page.fill("#prompt", "x" * 2501)
    await page.click("#submit")
    await page.wait_for_selector("#error:not([hidden])")
    assert await page.inner_text("#error") == (
        "400: prompt: must be at most 2500 characters (got 2501)"
    )
    await page.fill("#api-key", "kin_wrong")
    await page.fill("#prompt", "fine")
    await page.click("#submit")
    await page.wait_for_function(
        "() => document.querySelector('#error').textContent.startsWith('401')"
    )
    assert await page.inner_text("#error") == "401: invalid API key"


async def test_the_form_sends_every_video_parameter_by_its_contract_name(
    page: Page, server: Server
) -> None:
    sent: list[dict[str, Any]] = []

    async def capture(route: Route) -> None:
        sent.append(json.loads(route.request.post_data or "{}"))
        await route.fulfill(status=400, json={"error": "captured"})

    await page.route(f"**/v2/{VIDEO}", capture)
    await _fill(page, server, VIDEO, "@Element1 waves, then <<<voice_1>>> speaks")
    await page.select_option("#aspect-ratio", "9:16")
    await page.fill("#duration", "4")
    await page.fill("#negative-prompt", "fog")
    await page.fill("#cfg-scale", "0.7")
    await page.fill("#voice-ids", "voice_a, voice_b")
    await page.fill("#seed", "7")
    await page.fill("#end-url", "https://example.org/end.png")
    for _ in range(2):
        await page.click("#add-shot")
    await page.fill("#shots .shot:nth-child(1) .shot-prompt", "one")
    await page.fill("#shots .shot:nth-child(1) .shot-duration", "1")
    await page.fill("#shots .shot:nth-child(2) .shot-prompt", "two")
    await page.fill("#shots .shot:nth-child(2) .shot-duration", "3")
    await page.click("#add-element")
    await page.set_input_files("#elements .el-file", str(SAMPLE))
    await page.fill(
        "#elements .el-ref-urls", "https://example.org/a.png, https://example.org/b.png"
    )
    await page.click("#submit")
    await page.wait_for_selector("#error:not([hidden])")
    assert await page.inner_text("#error") == "400: captured"
    (body,) = sent
    start, frontal = body.pop("start_image_url"), body["elements"][0].pop("frontal_image_url")
    assert start == frontal and str(start).startswith("data:image/png;base64,")
    assert body == {
        "prompt": "@Element1 waves, then <<<voice_1>>> speaks",
        "aspect_ratio": "9:16",
        "seed": 7,
        "elements": [
            {"reference_image_urls": ["https://example.org/a.png", "https://example.org/b.png"]}
        ],
        "duration": "4",
        "generate_audio": True,
        "negative_prompt": "fog",
        "cfg_scale": 0.7,
        "end_image_url": "https://example.org/end.png",
        "voice_ids": ["voice_a", "voice_b"],
        "shot_type": "customize",
        "multi_prompt": [{"prompt": "one", "duration": 1}, {"prompt": "two", "duration": 3}],
    }
