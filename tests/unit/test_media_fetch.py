"""load_media: real HTTP against a loopback server, SSRF refusals, caps, data URIs, base64."""

from __future__ import annotations

import base64
import gzip
import io
import ipaddress
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest
from PIL import Image

from kinema.errors import InvalidInput
from kinema.media import fetch
from kinema.media.fetch import FetchPolicy, blocked_reason, guarded_client, load_media
from kinema.settings import FetchSettings

pytestmark = pytest.mark.unit

FIELD = "start_image_url"
LOOPBACK = FetchPolicy(allow_hosts=("127.0.0.1",), timeout_s=10)


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 30, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    stop: threading.Event
    hits: list[str]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self.server.hits.append(url.path)
        route = getattr(self, "_" + url.path.strip("/").replace("-", "_"), None)
        try:
            if route is None:
                self._send(404, b"not found")
            else:
                route(parse_qs(url.query))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up: what several tests expect

    def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _image(self, _query: dict[str, list[str]]) -> None:
        self._send(200, PNG, "image/png")

    def _empty(self, _query: dict[str, list[str]]) -> None:
        self._send(200, b"")

    def _redirect(self, query: dict[str, list[str]]) -> None:
        self.send_response(302)
        self.send_header("Location", query["to"][0])
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _endless(self, _query: dict[str, list[str]]) -> None:
        self.send_response(200)  # no Content-Length: the body ends when the socket closes
        self.end_headers()
        chunk = b"\0" * 65536
        while not self.server.stop.is_set():
            self.wfile.write(chunk)

    def _huge_length(self, _query: dict[str, list[str]]) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(10**10))
        self.end_headers()
        self.wfile.write(b"x" * 10)
        self.wfile.flush()
        self.server.stop.wait(5)

    def _gzip(self, query: dict[str, list[str]]) -> None:
        body = PNG if "zeros" not in query else b"\0" * int(query["zeros"][0])
        packed = gzip.compress(body)
        self.send_response(200)
        self.send_header("Content-Encoding", query.get("as", ["gzip"])[0])
        self.send_header("Content-Length", str(len(packed)))
        self.end_headers()
        self.wfile.write(packed)

    def _slow(self, _query: dict[str, list[str]]) -> None:
        self.server.stop.wait(3)
        self._send(200, PNG, "image/png")


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.stop = threading.Event()
    httpd.hits = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.stop.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def _url(server: _Server, path: str, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{server.server_address[1]}{path}"


async def test_allowed_loopback_url_returns_the_served_bytes(server: _Server) -> None:
    assert await load_media(_url(server, "/image"), field=FIELD, policy=LOOPBACK) == PNG


@pytest.mark.parametrize("entry", ["127.0.0.1", "127.0.0.0/8", "localhost", "LOCALHOST."])
async def test_allow_list_entries_by_ip_network_or_name(server: _Server, entry: str) -> None:
    policy = FetchPolicy(allow_hosts=(entry,), timeout_s=10)
    host = "localhost" if "localhost" in entry.lower() else "127.0.0.1"
    assert await load_media(_url(server, "/image", host), field=FIELD, policy=policy) == PNG


async def test_loopback_is_refused_without_allow_list_before_any_request(server: _Server) -> None:
    before = len(server.hits)
    with pytest.raises(InvalidInput, match=rf"^{FIELD}: refused: .*loopback"):
        await load_media(_url(server, "/image"), field=FIELD, policy=FetchPolicy())
    assert len(server.hits) == before


async def test_hostname_resolving_to_loopback_is_refused(server: _Server) -> None:
    with pytest.raises(
        InvalidInput, match=rf"^{FIELD}: refused: localhost resolves to .*, a loopback address"
    ):
        await load_media(_url(server, "/image", "localhost"), field=FIELD, policy=FetchPolicy())


@pytest.mark.parametrize(
    "host",
    [
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104 - a refused target, nothing binds to it
        "224.0.0.1",
        "255.255.255.255",
        "240.0.0.1",
        "[::1]",
        "[::]",
        "[fe80::1]",
        "[fc00::1]",
        "[ff02::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:10.0.0.1]",
        "[64:ff9b::a9fe:a9fe]",
    ],
)
async def test_private_and_special_addresses_are_refused(host: str) -> None:
    with pytest.raises(InvalidInput, match=rf"^{FIELD}: refused: "):
        await load_media(f"http://{host}:9/x.png", field=FIELD, policy=FetchPolicy())


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("0.0.0.0", "0.0.0.0 is an unspecified address"),  # noqa: S104 - refused, never bound
        ("10.0.0.1", "10.0.0.1 is a private address"),
    ],
)
async def test_refusal_names_the_address_kind_and_the_setting_that_allows_it(
    host: str, message: str
) -> None:
    hint = f"; to allow it, add '{host}' to the setting fetch.allow_hosts (docs/configuration.md)"
    with pytest.raises(InvalidInput, match=rf"^{FIELD}: refused: {re.escape(message + hint)}$"):
        await load_media(f"http://{host}:9/x.png", field=FIELD, policy=FetchPolicy())


async def test_a_name_resolving_to_a_private_address_is_refused_with_the_setting_named(
    server: _Server,
) -> None:
    # The hint names the setting as it is spelled in Settings (and so in TOML and the env).
    assert "allow_hosts" in FetchSettings.model_fields
    with pytest.raises(InvalidInput) as exc:
        await load_media(_url(server, "/image", "localhost"), field=FIELD, policy=FetchPolicy())
    assert exc.value.message.endswith(
        "; to allow it, add 'localhost' to the setting fetch.allow_hosts (docs/configuration.md)"
    )


@pytest.mark.parametrize(
    "target",
    ["127.0.0.1", "::1", "::ffff:7f00:1", "10.1.2.3", "169.254.169.254", "fd00::5"],
)
async def test_connect_time_guard_refuses_even_a_direct_client_request(target: str) -> None:
    # No URL pre-check here: the network backend itself refuses the resolved address.
    async with guarded_client(FetchPolicy(timeout_s=5)) as client:
        host = f"[{target}]" if ":" in target else target
        with pytest.raises(fetch.BlockedAddressError):
            await client.get(f"http://{host}:9/")


async def test_dns_answer_is_checked_and_pinned(
    server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def rebinding_dns(host: str, port: int, **_: Any) -> list[Any]:
        assert host == "images.example"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(anyio, "getaddrinfo", rebinding_dns)
    url = _url(server, "/image", "images.example")
    with pytest.raises(
        InvalidInput,
        match=r"images\.example resolves to 127\.0\.0\.1, a loopback address; to allow it, "
        r"add 'images\.example' to the setting fetch\.allow_hosts",
    ):
        await load_media(url, field=FIELD, policy=FetchPolicy())
    # Allowed by address: the connection goes to the checked IP the resolver returned.
    assert await load_media(url, field=FIELD, policy=LOOPBACK) == PNG


async def test_redirect_to_loopback_is_refused(server: _Server) -> None:
    policy = FetchPolicy(allow_hosts=("localhost",), timeout_s=10)
    start = _url(server, f"/redirect?to={_url(server, '/image')}", "localhost")
    with pytest.raises(InvalidInput, match=rf"^{FIELD}: refused: .*loopback"):
        await load_media(start, field=FIELD, policy=policy)


async def test_redirect_to_an_allowed_target_is_followed(server: _Server) -> None:
    start = _url(server, f"/redirect?to={_url(server, '/image')}")
    assert await load_media(start, field=FIELD, policy=LOOPBACK) == PNG


async def test_redirect_to_another_scheme_is_refused(server: _Server) -> None:
    start = _url(server, "/redirect?to=file:///etc/passwd")
    with pytest.raises(InvalidInput, match=rf"^{FIELD}: refused: redirect to unsupported scheme"):
        await load_media(start, field=FIELD, policy=LOOPBACK)


async def test_redirect_loop_stops_after_max_redirects(server: _Server) -> None:
    loop = _url(server, "/redirect?to=/redirect%3Fto%3D/redirect%253Fto%253D/redirect")
    with pytest.raises(InvalidInput, match=r"more than 1 redirects"):
        await load_media(
            loop, field=FIELD, policy=FetchPolicy(allow_hosts=("127.0.0.1",), max_redirects=1)
        )


async def test_cap_is_enforced_while_streaming_an_endless_body(server: _Server) -> None:
    policy = FetchPolicy(allow_hosts=("127.0.0.1",), max_bytes=1_000_000, timeout_s=20)
    started = time.monotonic()
    with pytest.raises(InvalidInput, match=rf"^{FIELD}: exceeds the 0\.95\d* MB limit$"):
        await load_media(_url(server, "/endless"), field=FIELD, policy=policy)
    assert time.monotonic() - started < 10


async def test_content_length_over_cap_is_refused_before_reading(server: _Server) -> None:
    started = time.monotonic()
    with pytest.raises(
        InvalidInput, match=r"exceeds the 50 MB limit \(Content-Length 10000000000\)"
    ):
        await load_media(_url(server, "/huge-length"), field=FIELD, policy=LOOPBACK)
    assert time.monotonic() - started < 3  # the server never finishes that body


async def test_gzip_answer_is_inflated(server: _Server) -> None:
    assert await load_media(_url(server, "/gzip"), field=FIELD, policy=LOOPBACK) == PNG


async def test_gzip_bomb_is_stopped_at_the_cap(server: _Server) -> None:
    policy = FetchPolicy(allow_hosts=("127.0.0.1",), max_bytes=1_000_000, timeout_s=10)
    with pytest.raises(InvalidInput, match=rf"^{FIELD}: exceeds the .* MB limit$"):
        await load_media(_url(server, "/gzip?zeros=50000000"), field=FIELD, policy=policy)


async def test_unknown_content_encoding_is_refused(server: _Server) -> None:
    with pytest.raises(InvalidInput, match=r"unsupported Content-Encoding br"):
        await load_media(_url(server, "/gzip?as=br"), field=FIELD, policy=LOOPBACK)


async def test_http_error_status_is_named(server: _Server) -> None:
    with pytest.raises(InvalidInput, match=rf"^{FIELD}: could not be fetched: HTTP 404"):
        await load_media(_url(server, "/missing"), field=FIELD, policy=LOOPBACK)


async def test_slow_server_times_out(server: _Server) -> None:
    policy = FetchPolicy(allow_hosts=("127.0.0.1",), timeout_s=0.5)
    with pytest.raises(InvalidInput, match=rf"^{FIELD}: could not be fetched: timed out"):
        await load_media(_url(server, "/slow"), field=FIELD, policy=policy)


async def test_empty_body_is_refused(server: _Server) -> None:
    with pytest.raises(InvalidInput, match=r"empty body"):
        await load_media(_url(server, "/empty"), field=FIELD, policy=LOOPBACK)


async def test_connection_refused_is_an_invalid_input() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(InvalidInput, match=rf"^{FIELD}: could not be fetched: ") as info:
        await load_media(f"http://127.0.0.1:{port}/x", field=FIELD, policy=LOOPBACK)
    assert isinstance(info.value.__cause__, httpx.ConnectError)


async def test_a_shared_guarded_client_can_be_passed(server: _Server) -> None:
    async with guarded_client(LOOPBACK) as client:
        for _ in range(2):
            url = _url(server, "/image")
            assert await load_media(url, field=FIELD, policy=LOOPBACK, client=client) == PNG


@pytest.mark.parametrize(
    "value", ["ftp://example.com/a.png", "file:///etc/passwd", "gopher://x", "javascript:alert(1)"]
)
async def test_other_schemes_are_refused(value: str) -> None:
    with pytest.raises(InvalidInput, match=rf"^{FIELD}: unsupported URL scheme"):
        await load_media(value, field=FIELD, policy=FetchPolicy())


async def test_data_uri_is_decoded() -> None:
    encoded = base64.b64encode(PNG).decode()
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    for uri in (f"data:image/png;base64,{encoded}", f"DATA:image/png;base64,{wrapped}"):
        assert await load_media(uri, field=FIELD, policy=FetchPolicy()) == PNG


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("data:image/png;base64", "malformed data URI"),
        ("data:image/png,%89PNG", "must be base64-encoded"),
        ("data:image/png;base64,!!!!", "not valid base64"),
        ("data:image/png;base64,", "base64 data is empty"),
    ],
)
async def test_bad_data_uris_are_refused(uri: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=rf"^{FIELD}: .*{message}"):
        await load_media(uri, field=FIELD, policy=FetchPolicy())


async def test_bare_base64_standard_and_urlsafe_unpadded() -> None:
    standard = base64.b64encode(PNG).decode()
    urlsafe = base64.urlsafe_b64encode(PNG).decode().rstrip("=")
    for value in (standard, urlsafe, f"  {standard}\n"):
        assert await load_media(value, field=FIELD, policy=FetchPolicy()) == PNG


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("this is not base64!", "not valid base64"),
        ("abcde", "truncated"),
        ("aGVsbG8=aGVsbG8=", "not valid base64"),
        ("ünïcode", "not valid base64"),
        ("   ", "is empty"),
    ],
)
async def test_garbage_base64_is_refused_precisely(value: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=rf"^{FIELD}: .*{message}"):
        await load_media(value, field=FIELD, policy=FetchPolicy())


async def test_oversized_base64_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*_: Any, **__: Any) -> bytes:
        raise AssertionError("decoded an oversized payload")

    monkeypatch.setattr(base64, "b64decode", never)
    value = base64.b64encode(b"x" * 101).decode()
    with pytest.raises(InvalidInput, match=rf"^{FIELD}: exceeds the .* MB limit \(101 bytes"):
        await load_media(value, field=FIELD, policy=FetchPolicy(max_bytes=100))


def test_blocked_reason_names_the_category() -> None:
    def reason(text: str) -> str | None:
        return blocked_reason(ipaddress.ip_address(text))

    assert reason("8.8.8.8") is None
    assert reason("2606:4700::1111") is None
    assert reason("127.0.0.1") == "loopback address"
    assert reason("::ffff:192.168.0.1") == "private address (embeds 192.168.0.1)"
    assert reason("64:ff9b::a9fe:a9fe") == "link-local address (embeds 169.254.169.254)"
    assert reason("100.64.0.1") == "non-public address"
    assert reason("::") == "unspecified address"


def test_allow_list_matching() -> None:
    policy = FetchPolicy(allow_hosts=("images.internal", ".corp", "10.0.0.0/8", "[fd00::1]"))
    assert policy.host_allowed("IMAGES.internal.")
    assert policy.host_allowed("cdn.corp")
    assert not policy.host_allowed("corp.evil")
    assert policy.address_allowed(ipaddress.ip_address("10.200.0.1"))
    assert policy.address_allowed(ipaddress.ip_address("::ffff:10.0.0.1"))
    assert policy.address_allowed(ipaddress.ip_address("fd00::1"))
    assert not policy.address_allowed(ipaddress.ip_address("192.168.0.1"))
