"""``AiohttpTransport`` against a real aiohttp.web server on 127.0.0.1 (a free port)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import httpx
import pytest
from aiohttp import web

from capbatch._exceptions import ConnectionFailed, MalformedReply, ReplyTooLarge, RequestTimeout
from capbatch._providers.client import ProviderClient, make_http_client
from capbatch._providers.profiles import CAPSOLVER
from capbatch._providers.transport import MAX_REPLY_BYTES, AiohttpTransport, ReplyTooLargeError

T = TypeVar("T")
RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PAYLOAD = {"errorId": 0, "status": "ready", "solution": {"text": "é-ok " * 50}}


@asynccontextmanager
async def serve(handler: RouteHandler) -> AsyncIterator[str]:
    """Run ``handler`` for every POST on a fresh loopback port; yield the base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await asyncio.wait_for(runner.cleanup(), timeout=5)


HEADER_BUG = (
    "BUG (_transport.AiohttpTransport.handle_async_request): passes request.headers.raw "
    "(bytes names) to aiohttp, which needs str names, so every request fails with "
    "TypeError; decode the names (see the report's patch)"
)


async def capped(call: Awaitable[T]) -> T:
    """Await ``call`` for at most 5 s, turning the known header bug into a clear failure."""
    try:
        return await asyncio.wait_for(call, 5)
    except TypeError as exc:
        if "CIMultiDict" not in str(exc):
            raise
        pytest.fail(f"{HEADER_BUG}: {exc}")


async def post(http: httpx.AsyncClient, url: str, content: bytes = b"{}") -> httpx.Response:
    return await capped(http.post(url, content=content))


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_json_post_round_trip() -> None:
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append((request.path, dict(request.headers), body))
        return web.json_response({"errorId": 0, "echo": json.loads(body)})

    big = {"clientKey": "k", "task": {"type": "ImageToTextTask", "body": "A" * 8192}}
    async with serve(echo) as url, make_http_client() as http:
        for _ in range(3):  # several requests over the same pool
            response = await post(http, url + "/createTask", json.dumps(big).encode())
            assert response.status_code == 200
            assert response.json() == {"errorId": 0, "echo": big}
            assert response.headers["content-type"].startswith("application/json")
            assert response.http_version == "HTTP/1.1"
    path, headers, body = seen[0]
    assert path == "/createTask"
    assert json.loads(body) == big
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == "capbatch"
    assert int(headers["Content-Length"]) == len(body)
    assert len(seen) == 3


async def test_provider_client_over_the_real_transport() -> None:
    async def balance(request: web.Request) -> web.Response:
        assert (await request.json()) == {"clientKey": "k-1"}
        return web.json_response({"errorId": 0, "balance": 4.25})

    async with serve(balance) as url, ProviderClient(CAPSOLVER, "k-1", base_url=url) as client:
        assert await capped(client.get_balance()) == 4.25


async def test_gzip_reply_is_decoded_once() -> None:
    raw = json.dumps(PAYLOAD).encode()

    async def gzipped(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(
            body=gzip.compress(raw),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    async with serve(gzipped) as url, make_http_client() as http:
        response = await post(http, url + "/getTaskResult", content=b"{}")
    assert response.headers["content-encoding"] == "gzip"
    assert response.content == raw
    assert response.json() == PAYLOAD


async def test_server_closing_without_a_reply() -> None:
    async def hang_up(request: web.Request) -> web.Response:
        await request.read()
        assert request.transport is not None
        request.transport.close()
        raise asyncio.CancelledError

    async with serve(hang_up) as url, make_http_client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await post(http, url + "/createTask", content=b"{}")


async def test_closed_port_is_a_connect_error() -> None:
    url = f"http://127.0.0.1:{closed_port()}/createTask"
    async with make_http_client() as http:
        with pytest.raises(httpx.ConnectError):
            await post(http, url, content=b"{}")


async def test_closed_port_through_the_client_is_connect_failed() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    async with ProviderClient(CAPSOLVER, "k", base_url=url) as client:
        with pytest.raises(ConnectionFailed) as info:
            await capped(client.get_balance())
    assert info.value.error_code == "CONNECT_FAILED"


async def test_slow_reply_is_a_read_timeout() -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.wait_for(release.wait(), timeout=5)
        return web.json_response({"errorId": 0})

    timeout = httpx.Timeout(5.0, read=0.2)
    async with serve(slow) as url:
        async with make_http_client(timeout=timeout) as http:
            with pytest.raises(httpx.ReadTimeout):
                await post(http, url + "/getTaskResult", content=b"{}")
        async with ProviderClient(CAPSOLVER, "k", base_url=url, timeout=timeout) as client:
            with pytest.raises(RequestTimeout) as info:
                await capped(client.get_balance())
            assert info.value.error_code == "REQUEST_TIMEOUT"
        release.set()


async def test_error_status_and_headers_pass_through() -> None:
    async def limited(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=429, text="slow down", headers={"Retry-After": "9"})

    async with serve(limited) as url, make_http_client() as http:
        response = await post(http, url + "/createTask", content=b"{}")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "9"
    assert response.text == "slow down"


async def test_no_redirects_followed() -> None:
    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    async with serve(moved) as url, make_http_client() as http:
        response = await post(http, url + "/createTask", content=b"{}")
    assert response.status_code == 302


async def test_aclose_and_reopen() -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"errorId": 0})

    transport = AiohttpTransport(max_connections=2)
    await transport.aclose()  # closing before first use is harmless
    async with serve(ok) as url:
        for _ in range(2):
            async with httpx.AsyncClient(transport=transport) as http:
                response = await post(http, url, content=b"{}")
                assert response.json() == {"errorId": 0}
            assert transport._session is None


# --- hostile replies over the real transport --------------------------------------------


async def stream_body(request: web.Request, total: int, sent: list[int]) -> web.StreamResponse:
    """Stream ``total`` bytes of JSON-ish filler, chunked; ``sent`` counts what went."""
    await request.read()
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    chunk = b" " * 65536
    try:
        while sent[0] < total:
            await response.write(chunk)
            sent[0] += len(chunk)
    except (ConnectionError, RuntimeError):
        return response  # the client hung up
    await response.write_eof()
    return response


async def test_chunked_reply_past_the_cap_is_dropped_early() -> None:
    sent = [0]
    total = 50_000_000

    async def huge(request: web.Request) -> web.StreamResponse:
        return await stream_body(request, total, sent)

    async with serve(huge) as url:
        async with ProviderClient(CAPSOLVER, "k", base_url=url) as client:
            with pytest.raises(ReplyTooLarge) as info:
                await capped(client.create_task({"type": "ImageToTextTask"}))
            assert info.value.error_code == "REPLY_TOO_LARGE"
        async with make_http_client() as http:
            with pytest.raises(ReplyTooLargeError):
                await post(http, url + "/createTask")
    assert sent[0] < total // 2, "the client read on past the cap"


async def test_declared_length_past_the_cap_is_refused() -> None:
    async def declared(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b" " * (MAX_REPLY_BYTES + 10), content_type="application/json")

    async with serve(declared) as url, ProviderClient(CAPSOLVER, "k", base_url=url) as client:
        with pytest.raises(ReplyTooLarge):
            await capped(client.get_balance())


async def test_reply_just_under_the_cap_is_read() -> None:
    body = json.dumps({"errorId": 0, "balance": 1.5}).encode()

    async def padded(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body + b" " * (MAX_REPLY_BYTES - len(body)))

    async with serve(padded) as url, ProviderClient(CAPSOLVER, "k", base_url=url) as client:
        assert await capped(client.get_balance()) == 1.5


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
async def test_compressed_replies_inflate_with_a_bound(encoding: str) -> None:
    good = json.dumps({"errorId": 0, "balance": 2.0}).encode()
    bomb = b'{"errorId":0,"balance":1' + b"0" * (30 * MAX_REPLY_BYTES) + b"}"

    def pack(data: bytes) -> bytes:
        if encoding == "gzip":
            return gzip.compress(data)
        if encoding == "deflate":
            return zlib.compress(data)
        packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return packer.compress(data) + packer.flush()

    bodies = [pack(good), pack(bomb)]
    assert len(bodies[1]) < MAX_REPLY_BYTES  # small on the wire, 30 MB inflated
    name = "deflate" if encoding == "raw-deflate" else encoding

    async def compressed(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=bodies.pop(0), headers={"Content-Encoding": name})

    async with serve(compressed) as url, ProviderClient(CAPSOLVER, "k", base_url=url) as client:
        assert await capped(client.get_balance()) == 2.0
        with pytest.raises(ReplyTooLarge):
            await capped(client.get_balance())


@pytest.mark.parametrize(
    ("encoding", "body"), [("br", b"\x1b\x00"), ("gzip", b"not gzip at all")], ids=["br", "bad"]
)
async def test_unknown_or_broken_encoding_is_malformed(encoding: str, body: bytes) -> None:
    async def odd(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, headers={"Content-Encoding": encoding})

    async with serve(odd) as url, ProviderClient(CAPSOLVER, "k", base_url=url) as client:
        with pytest.raises(MalformedReply) as info:
            await capped(client.get_balance())
    assert info.value.error_code == "MALFORMED_REPLY"


async def test_only_bounded_encodings_are_asked_for() -> None:
    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Accept-Encoding", ""))
        return web.json_response({"errorId": 0, "balance": 1})

    async with serve(record) as url, ProviderClient(CAPSOLVER, "k", base_url=url) as client:
        await capped(client.get_balance())
    assert seen == ["gzip, deflate"]


async def test_dripping_reply_hits_the_deadline() -> None:
    stop = asyncio.Event()

    async def drip(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(100):  # a byte every 50 ms: far inside the read timeout
                await response.write(b" ")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.05)
                if stop.is_set():
                    break
        except (ConnectionError, RuntimeError):
            pass
        return response

    timeout = httpx.Timeout(5.0, read=1.0)
    async with serve(drip) as url:
        client = ProviderClient(CAPSOLVER, "k", base_url=url, timeout=timeout, deadline=0.4)
        async with client:
            started = asyncio.get_running_loop().time()
            with pytest.raises(RequestTimeout) as info:
                await capped(client.create_task({"type": "ImageToTextTask"}))
            elapsed = asyncio.get_running_loop().time() - started
        stop.set()
    assert info.value.error_code == "REQUEST_TIMEOUT"  # maybe sent
    assert 0.3 < elapsed < 2.0
