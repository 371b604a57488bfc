"""Gradio's front-end files served from memory (`webapp.static_cache`): kept once per encoding and
origin, replayed without reaching the app, bounded; and in the running app, the page's own files."""

from __future__ import annotations

import asyncio
import gzip
import re
import urllib.request

import brotli
import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from fastapi.testclient import TestClient

from webapp.static_cache import IMMUTABLE, install, install_page

BROWSER = {"Accept-Encoding": "gzip, deflate, br, zstd"}


def started_app(**cache_limits):
    """A FastAPI app with a counted file route, started (its middleware stack built by a first
    request, as Gradio's is before `register_routes`), then the cache installed."""
    app = FastAPI()
    served: list[str] = []

    @app.get("/assets/{name}")
    def asset(name: str, request: Request):
        served.append(name)
        if name == "missing.js":
            return PlainTextResponse("no", 404)
        body = (name * 1000).encode()
        return Response(
            body, media_type="text/javascript", headers={"X-Encoding": request.headers.get("accept-encoding", "")}
        )

    @app.get("/elsewhere/{name}")
    def elsewhere(name: str):
        served.append(name)
        return PlainTextResponse(name)

    client = TestClient(app)
    assert client.get("/elsewhere/warm").status_code == 200  # the stack is built now
    cache = install(app, **cache_limits)
    return client, cache, served


def test_a_file_is_served_once_by_the_app_then_from_memory_immutable():
    client, cache, served = started_app()
    first = client.get("/assets/a.js", headers=BROWSER)
    again = client.get("/assets/a.js", headers=BROWSER)
    assert served.count("a.js") == 1 and cache.hits == 1
    assert again.content == first.content == b"a.js" * 1000
    assert again.headers["cache-control"] == IMMUTABLE.decode()  # content-hashed names never change
    assert again.headers["x-encoding"] == BROWSER["Accept-Encoding"]  # the headers of the response kept
    assert "date" not in again.headers  # not a stale date replayed


def test_each_encoding_and_origin_is_kept_apart_and_ranges_errors_and_other_paths_pass_through():
    client, cache, served = started_app()
    client.get("/assets/a.js", headers=BROWSER)
    plain = client.get("/assets/a.js", headers={"Accept-Encoding": "identity"})
    assert plain.headers["x-encoding"] == "identity" and served.count("a.js") == 2  # another encoding: asked
    client.get("/assets/a.js", headers={**BROWSER, "Origin": "https://elsewhere.example"})
    assert served.count("a.js") == 3  # another origin: asked (CORS headers may differ)
    for _ in range(2):
        client.get("/assets/a.js", headers={**BROWSER, "Range": "bytes=0-9"})
        client.get("/assets/a.js?v=2", headers=BROWSER)
        assert client.get("/assets/missing.js", headers=BROWSER).status_code == 404
        client.get("/elsewhere/b", headers=BROWSER)
    assert served.count("a.js") == 7 and served.count("missing.js") == 2 and served.count("b") == 2
    assert client.post("/assets/a.js").status_code == 405  # only GET is looked up


def test_memory_is_bounded_by_the_cache_not_by_the_files():
    client, cache, served = started_app(max_bytes=15_000, max_entry=8_000)
    client.get("/assets/aaaaaa.js", headers=BROWSER)  # 9,000 bytes: over the entry cap, never kept
    client.get("/assets/aaaa.js", headers=BROWSER)  # 7,000: kept
    client.get("/assets/bbbb.js", headers=BROWSER)  # 7,000: kept (14,000)
    client.get("/assets/cccc.js", headers=BROWSER)  # would be 21,000: not kept
    for name in ("aaaaaa.js", "aaaa.js", "bbbb.js", "cccc.js"):
        assert client.get(f"/assets/{name}", headers=BROWSER).content == name.encode() * 1000
    assert [served.count(n) for n in ("aaaaaa.js", "aaaa.js", "bbbb.js", "cccc.js")] == [2, 1, 1, 2]
    assert cache.size == 14_000 <= 15_000


@pytest.mark.slow
def test_the_running_apps_page_files_come_from_memory(tmp_path):
    """The app as launched: the page's script, fetched twice as browsers fetch it, is the same,
    compressed as asked, and marked immutable the second time (served by the cache)."""
    from tests.helpers import serve_app
    from webapp.config import AppConfig
    from webapp.lab import LabApp

    lab = LabApp(AppConfig(data_dir=tmp_path / "data", models=("dprnn",), prepare_stimuli=False))
    demo, url = serve_app(lab)
    try:
        page = urllib.request.urlopen(url, timeout=60).read().decode()
        script = re.search(r'src="\.?/?(assets/index-[^"]+\.js)"', page).group(1)
        answers = []
        for _ in range(2):
            request = urllib.request.Request(f"{url}{script}", headers=BROWSER)
            with urllib.request.urlopen(request, timeout=60) as response:
                answers.append((response.read(), response.headers.get("Content-Encoding"), response.headers))
        assert answers[0][:2] == answers[1][:2] and answers[1][1] == "br"
        assert answers[1][2]["Cache-Control"] == IMMUTABLE.decode()
    finally:
        demo.close()


def test_requests_for_a_file_being_fetched_wait_for_that_answer_not_the_app():
    """A class opening the page at once asks for each file many times in the same moment: the app
    is asked once, the others get its answer; a failed answer sends each waiter to the app."""
    app = FastAPI()
    served: list[str] = []

    @app.get("/assets/{name}")
    async def asset(name: str):
        served.append(name)
        await asyncio.sleep(0.2)  # a slow first answer: the others arrive while it is fetched
        if name == "missing.js":
            return PlainTextResponse("no", 404)
        return Response(name.encode() * 1000, media_type="text/javascript")

    cache = install(app)

    async def together(name: str, n: int = 10) -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await asyncio.gather(*(client.get(f"/assets/{name}", headers=BROWSER) for _ in range(n)))

    answers = asyncio.run(together("a.js"))
    assert served.count("a.js") == 1 and cache.hits == 9
    assert all(r.status_code == 200 and r.content == b"a.js" * 1000 for r in answers)
    missing = asyncio.run(together("missing.js", 4))
    assert [r.status_code for r in missing] == [404] * 4 and served.count("missing.js") == 4
    assert not cache.pending  # nothing left waiting


def tiny_gradio_app():
    """A small Gradio page launched on loopback, its page cache installed as the app's is."""
    import gradio as gr

    with gr.Blocks() as demo:
        gr.Markdown("a page")
        gr.Textbox(label="a box")
    app, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    return demo, url, install_page(app)


def get(url: str, **headers):
    """The body as sent (still compressed) and the headers."""
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as response:
        return response.read(), response.headers


def test_the_page_is_gradios_own_kept_per_root_url_compressed_once_and_bounded():
    demo, url, cache = tiny_gradio_app()
    try:
        fresh, headers = get(url, **{"Accept-Encoding": "identity"})  # Gradio renders it
        again, _ = get(url, **{"Accept-Encoding": "identity"})
        assert cache.hits == 1 and again == fresh and b"a page" in fresh
        squeezed, squeezed_headers = get(url, **BROWSER)  # another encoding: rendered, then kept compressed
        squeezed, squeezed_headers = get(url, **BROWSER)
        assert cache.hits == 2 and squeezed_headers["Content-Encoding"] == "br"
        assert brotli.decompress(squeezed) == fresh and len(squeezed) < len(fresh) / 2
        assert get(url, **{"Accept-Encoding": "gzip"})[0] == fresh  # the first as Gradio sends it
        assert gzip.decompress(get(url, **{"Accept-Encoding": "gzip"})[0]) == fresh
        # behind another public name: that name's URLs in the page, never the first visitor's
        proxied, _ = get(url, **{"Accept-Encoding": "identity", "X-Forwarded-Host": "lab.example"})
        proxied_again, _ = get(url, **{"Accept-Encoding": "identity", "X-Forwarded-Host": "lab.example"})
        assert proxied == proxied_again != fresh and b"http://lab.example" in proxied
        assert b"lab.example" not in get(url, **{"Accept-Encoding": "identity"})[0]
        hits = cache.hits
        themed = [get(f"{url}?__theme=dark", **{"Accept-Encoding": "identity"})[0] for _ in range(2)]
        assert themed[0] == themed[1] and cache.hits == hits + 1  # iframe embeds ask so; the script reads it
        hits = cache.hits
        for _ in range(2):  # another query: Gradio's, every time (the route reads `page`, `deep_link`)
            get(f"{url}?view=api", **{"Accept-Encoding": "identity"})
            get(f"{url}?__theme=dark&page=", **{"Accept-Encoding": "identity"})
        for n in range(40):  # Hosts a client makes up fill at most the cap, then pages are rendered
            assert b"a page" in get(url, **{"Accept-Encoding": "identity", "X-Forwarded-Host": f"h{n}.example"})[0]
        assert len(cache.entries) == cache.max_entries and cache.hits == hits
        assert get(url, **{"Accept-Encoding": "identity"})[0] == fresh and cache.hits == hits + 1  # still kept
    finally:
        demo.close()


def test_no_page_is_kept_where_a_login_is_needed():
    demo, url, cache = tiny_gradio_app()
    try:
        demo.app.auth = {"someone": "secret"}  # as `launch(auth=...)` sets it
        for _ in range(2):
            page, _ = get(url, **{"Accept-Encoding": "identity"})
            assert b"auth_required" in page and b"a box" not in page  # Gradio's login page, not the app
        assert cache.hits == 0 and not cache.entries
    finally:
        demo.close()
