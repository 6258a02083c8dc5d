"""Loading input media given as an http(s) URL, a ``data:`` URI or bare base64.

Every route enforces :attr:`FetchPolicy.max_bytes` before the bytes exist in memory: base64 by
its decoded length, URLs by ``Content-Length`` and then while streaming the body.

URLs are fetched through a client whose network backend resolves the host itself and connects
only to the address it checked (resolve, check, pin). A hostname that resolves to a private,
loopback, link-local, multicast, reserved or unspecified address is refused at connect time, so
DNS rebinding and redirects to such targets are refused too. Redirects are followed by hand and
each hop's scheme is checked again. The operator allow-list (``FetchPolicy.allow_hosts``) lifts
the address check for named hosts, addresses and networks.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import socket
import zlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from functools import cached_property

import anyio
import httpcore
import httpx

from kinema.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_WHITESPACE = re.compile(rb"\s+")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_PIECE = 64 * 1024
_BARE = "value (neither an http(s) URL nor a data: URI)"


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for loading input media.

    ``allow_hosts`` entries are hostnames (``images.internal``; ``.internal`` or ``*.internal``
    also match subdomains), IP addresses (``127.0.0.1``) or CIDR networks (``10.0.0.0/8``).
    A matching host or address may be fetched even when it is private.
    """

    max_bytes: int = 50 * 1024 * 1024
    timeout_s: float = 30
    max_redirects: int = 3
    allow_hosts: tuple[str, ...] = ()

    @cached_property
    def _allow(self) -> _AllowList:
        return _AllowList.parse(self.allow_hosts)

    def host_allowed(self, host: str) -> bool:
        """Whether the operator allow-list names ``host`` (a hostname or an IP literal)."""
        return self._allow.host(host)

    def address_allowed(self, ip: IPAddress) -> bool:
        """Whether the operator allow-list covers the address ``ip``."""
        return self._allow.address(ip)


@dataclass(frozen=True)
class _AllowList:
    names: frozenset[str]
    suffixes: tuple[str, ...]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> _AllowList:
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if entry.startswith(("*.", ".")):
                suffixes.append("." + entry.lstrip("*."))
            elif entry:
                names.add(entry)
        return cls(frozenset(names), tuple(suffixes), tuple(networks))

    def host(self, host: str) -> bool:
        name = host.lower().rstrip(".")
        return name in self.names or name.endswith(self.suffixes)

    def address(self, ip: IPAddress) -> bool:
        candidates = {ip, _unmap(ip)}
        return any(
            c in net for c in candidates for net in self.networks if c.version == net.version
        )


class BlockedAddressError(Exception):
    """The target resolves to an address the policy refuses (raised at connect time)."""


ALLOW_SETTING = "fetch.allow_hosts"
"""The setting that lifts the refusal (named in every refusal of a private address)."""


def allow_hint(host: str) -> str:
    """How an operator lets ``host`` be reached: appended to a refusal of a blocked address."""
    return f"; to allow it, add {host!r} to the setting {ALLOW_SETTING} (docs/configuration.md)"


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _unmap(ip: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped, NAT64, 6to4 or Teredo IPv6 address, else ``ip``."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip.teredo is not None:
            return ip.teredo[1]
    return ip


def blocked_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` may not be fetched without an allow-list entry (``"loopback address"``),
    or None when it is a public address."""
    for addr in dict.fromkeys((_unmap(ip), ip)):
        for label, hit in (
            ("unspecified", addr.is_unspecified),
            ("loopback", addr.is_loopback),
            ("link-local", addr.is_link_local),
            ("multicast", addr.is_multicast),
            ("private", addr.is_private),
            ("reserved", addr.is_reserved),
            ("non-public", not addr.is_global),
        ):
            if hit:
                return f"{label} address" + ("" if addr == ip else f" (embeds {addr})")
    return None


def _article(noun: str) -> str:
    return "an" if noun[:1] in "aeiou" else "a"


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host, refuses blocked addresses and connects to a checked address only."""

    def __init__(self, policy: FetchPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._resolve(host, port, timeout)
        if not self._policy.host_allowed(host):
            addresses = self._allowed(host, addresses)
        error: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for ip in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(ip), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error or httpcore.ConnectError(f"cannot connect to {host}")

    def _allowed(self, host: str, addresses: list[IPAddress]) -> list[IPAddress]:
        reasons = [blocked_reason(ip) for ip in addresses]
        # A name that resolves to any refused address is refused whole: one of them is a trap.
        for ip, reason in zip(addresses, reasons, strict=True):
            if reason is not None and not self._policy.address_allowed(ip):
                raise BlockedAddressError(
                    f"{host} resolves to {ip}, {_article(reason)} {reason}{allow_hint(host)}"
                )
        return addresses

    async def _resolve(self, host: str, port: int, limit_s: float | None) -> list[IPAddress]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        try:
            with anyio.fail_after(limit_s):
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        found = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        if not found:
            raise httpcore.ConnectError(f"cannot resolve {host}")
        return list(dict.fromkeys(found))

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedAddressError("unix sockets are not fetched")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, policy: FetchPolicy) -> None:
        super().__init__(trust_env=False, retries=0)
        ssl_context = httpx.create_ssl_context(trust_env=False)
        # httpx has no public hook for the network backend; swap the pool it just built.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            network_backend=_GuardedBackend(policy),
            retries=0,
        )


def guarded_client(policy: FetchPolicy) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` that enforces ``policy``'s address rules at connect time.

    Build one per process and pass it to :func:`load_media` to reuse connections. It ignores
    proxy environment variables: a proxy would hide the real target from the address check.
    """
    return httpx.AsyncClient(
        transport=_GuardedTransport(policy),
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(policy.timeout_s),
        headers={"Accept-Encoding": "identity", "User-Agent": "kinema-fetch/1"},
    )


def is_url(value: str) -> bool:
    """Whether ``value`` names something to download (http/https), not inline data."""
    match = _SCHEME.match(value.strip())
    return match is not None and match.group(1).lower() in ("http", "https")


async def load_media(
    value: str,
    *,
    field: str,
    policy: FetchPolicy,
    client: httpx.AsyncClient | None = None,
) -> bytes:
    """Return the bytes named by ``value``: an http(s) URL, a ``data:`` URI or bare base64.

    Raises :class:`InvalidInput` naming ``field`` for anything unusable: an unsupported scheme,
    invalid base64, a refused address, a non-2xx answer, a timeout, or more than
    ``policy.max_bytes``. ``client`` should come from :func:`guarded_client`; a client with
    another transport (a test's ``httpx.MockTransport``) does its own connecting, so only the
    scheme and IP-literal checks apply to it.
    """
    text = value.strip()
    if not text:
        raise InvalidInput(f"{field}: is empty")
    match = _SCHEME.match(text)
    if match is None:
        return _decode_base64(text, field=field, policy=policy, what=_BARE)
    scheme = match.group(1).lower()
    if scheme == "data":
        return _decode_data_uri(text, field=field, policy=policy)
    if scheme not in ("http", "https"):
        raise InvalidInput(f"{field}: unsupported URL scheme {scheme!r}; use http(s) or data:")
    if client is not None:
        return await _fetch(text, field=field, policy=policy, client=client)
    async with guarded_client(policy) as own:
        return await _fetch(text, field=field, policy=policy, client=own)


def _decode_data_uri(text: str, *, field: str, policy: FetchPolicy) -> bytes:
    header, sep, payload = text.partition(",")
    if not sep:
        raise InvalidInput(f"{field}: malformed data URI (no ',' before the data)")
    params = [p.strip().lower() for p in header[len("data:") :].split(";")]
    if "base64" not in params[1:]:
        raise InvalidInput(f"{field}: data URI must be base64-encoded (';base64,')")
    return _decode_base64(payload, field=field, policy=policy, what="data URI payload")


def _decode_base64(text: str, *, field: str, policy: FetchPolicy, what: str) -> bytes:
    try:
        raw = _WHITESPACE.sub(b"", text.encode("ascii"))
    except UnicodeEncodeError:
        raise InvalidInput(f"{field}: {what} is not valid base64 (non-ASCII characters)") from None
    if not raw:
        raise InvalidInput(f"{field}: base64 data is empty")
    if len(raw) % 4 == 1:
        raise InvalidInput(f"{field}: {what} is not valid base64 (truncated: length {len(raw)})")
    raw += b"=" * (-len(raw) % 4)
    decoded_size = len(raw) // 4 * 3 - (len(raw) - len(raw.rstrip(b"=")))
    if decoded_size > policy.max_bytes:
        raise InvalidInput(f"{field}: {_too_large(policy)} ({decoded_size} bytes of base64 data)")
    altchars = b"-_" if (b"-" in raw or b"_" in raw) else None
    try:
        data = base64.b64decode(raw, altchars=altchars, validate=True)
    except binascii.Error as exc:
        raise InvalidInput(f"{field}: {what} is not valid base64 ({exc})") from exc
    if not data:
        raise InvalidInput(f"{field}: base64 data is empty")
    return data


def _too_large(policy: FetchPolicy) -> str:
    return f"exceeds the {policy.max_bytes / (1024 * 1024):g} MB limit"


async def _fetch(url: str, *, field: str, policy: FetchPolicy, client: httpx.AsyncClient) -> bytes:
    try:
        with anyio.fail_after(policy.timeout_s):
            return await _follow(httpx.URL(url), field=field, policy=policy, client=client)
    except TimeoutError as exc:
        raise InvalidInput(
            f"{field}: could not be fetched: timed out after {policy.timeout_s:g} s"
        ) from exc
    except BlockedAddressError as exc:
        raise InvalidInput(f"{field}: refused: {exc}") from exc
    except httpx.TimeoutException as exc:
        kind = type(exc).__name__
        raise InvalidInput(f"{field}: could not be fetched: timed out ({kind})") from exc
    except httpx.InvalidURL as exc:
        raise InvalidInput(f"{field}: invalid URL: {exc}") from exc
    except httpx.HTTPError as exc:
        detail = str(exc) or type(exc).__name__
        raise InvalidInput(f"{field}: could not be fetched: {detail}") from exc


async def _follow(
    url: httpx.URL, *, field: str, policy: FetchPolicy, client: httpx.AsyncClient
) -> bytes:
    for _hop in range(policy.max_redirects + 1):
        _check_url(url, field=field, policy=policy)
        request = client.build_request("GET", url)
        response = await client.send(request, stream=True, follow_redirects=False)
        try:
            location = response.headers.get("location")
            if response.status_code in _REDIRECTS and location:
                url = response.url.join(location)
                continue
            if not response.is_success:
                reason = f" {response.reason_phrase}" if response.reason_phrase else ""
                raise InvalidInput(
                    f"{field}: could not be fetched: HTTP {response.status_code}{reason}"
                )
            return await _read_capped(response, field=field, policy=policy)
        finally:
            await response.aclose()
    raise InvalidInput(f"{field}: could not be fetched: more than {policy.max_redirects} redirects")


def check_target(url: str, *, field: str, policy: FetchPolicy) -> None:
    """An http(s) URL the server will call (a webhook): refused at once when it names a blocked
    address literally (400); names are checked when connecting, as for fetches."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise InvalidInput(f"{field}: invalid URL: {exc}") from None
    _check_url(parsed, field=field, policy=policy)


def _check_url(url: httpx.URL, *, field: str, policy: FetchPolicy) -> None:
    """Scheme and IP-literal checks for one hop (the connect-time guard covers names)."""
    if url.scheme not in ("http", "https"):
        raise InvalidInput(f"{field}: refused: redirect to unsupported scheme {url.scheme!r}")
    if not url.host:
        raise InvalidInput(f"{field}: invalid URL: no host")
    try:
        ip = ipaddress.ip_address(url.host)
    except ValueError:
        return
    reason = blocked_reason(ip)
    if reason is not None and not policy.address_allowed(ip):
        raise InvalidInput(
            f"{field}: refused: {url.host} is {_article(reason)} {reason}{allow_hint(url.host)}"
        )


async def _read_capped(response: httpx.Response, *, field: str, policy: FetchPolicy) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > policy.max_bytes:
        raise InvalidInput(f"{field}: {_too_large(policy)} (Content-Length {int(declared)})")
    body = bytearray()
    async for chunk in _decoded_chunks(response, field=field):
        body += chunk
        if len(body) > policy.max_bytes:
            raise InvalidInput(f"{field}: {_too_large(policy)}")
    if not body:
        raise InvalidInput(f"{field}: the URL answered with an empty body")
    return bytes(body)


async def _decoded_chunks(response: httpx.Response, *, field: str) -> AsyncIterator[bytes]:
    """The body in pieces of at most ``_PIECE`` bytes, however well it was compressed.

    httpx would inflate a whole network read at once (a 64 KB gzip bomb read becomes ~64 MB);
    inflating with ``max_length`` keeps the cap meaningful. We ask for ``identity``, so a
    compressed answer is rare; encodings other than gzip/deflate are refused.
    """
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        async for chunk in response.aiter_raw(_PIECE):
            yield chunk
        return
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise InvalidInput(
            f"{field}: could not be fetched: unsupported Content-Encoding {encoding}"
        )
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # accepts gzip and zlib headers
    try:
        async for raw in response.aiter_raw(_PIECE):
            pending = raw
            while pending:
                yield inflater.decompress(pending, _PIECE)
                pending = inflater.unconsumed_tail
    except zlib.error as exc:
        raise InvalidInput(f"{field}: could not be fetched: corrupt {encoding} body") from exc
