"""Headless-browser checks of built book pages (Chromium via the DevTools protocol).

No Selenium, no driver: Chromium is started with --remote-debugging-port and spoken
to over a websocket (tornado, already installed with Jupyter). Install the browser
with `apt-get install -y chromium` (Debian) or point $XL_CHROMIUM at one.

    from browser import check_page, open_page   # tests/ is on sys.path under pytest
    report = check_page("_build/html/book/chapters/similarity.html", select=[(0, 1, 2)])
    assert not report["failed_requests"] and not report["unexpected_errors"]

    with open_page(path) as page:          # for anything else
        page.select(explorer=0, dropdown=0, option=1)
        page.visible_images(), page.image_bytes()

Widgets are found through the explorer class `xl-explorer` (see xl/widgets.py); a
dropdown is the n-th <select> of an explorer, the visible image the <img> of that
explorer that is laid out (the Stacks hide the others).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

# Console errors of every page of a Jupyter Book 1.0.4 build, unrelated to widgets: Sphinx 7.4
# re-adds registry scripts with filename '' instead of None after Builder.init(), so
# sphinx-thebe's inline `const THEBE_JS_URL = ...` is emitted twice (harmless: thebe is off).
KNOWN_NOISE = ["Identifier 'THEBE_JS_URL' has already been declared"]


def known_noise(message: str) -> bool:
    """True for a console error listed in KNOWN_NOISE."""
    return any(pattern in message for pattern in KNOWN_NOISE)


FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--no-default-browser-check",
         "--disable-extensions", "--disable-sync", "--mute-audio", "--remote-debugging-port=0"]


def chromium() -> str | None:
    """Path of a Chromium/Chrome binary, or None."""
    candidates = [os.environ.get("XL_CHROMIUM"), "chromium", "chromium-browser", "google-chrome",
                  "/usr/bin/chromium"]
    for name in filter(None, candidates):
        path = shutil.which(name)
        if path:
            return path
    return None


def to_url(url_or_file) -> str:
    text = str(url_or_file)
    if "://" in text:
        return text
    return Path(text).resolve().as_uri()


class BrowserError(RuntimeError):
    pass


class Page:
    """One Chromium tab, driven over the DevTools protocol; records failures as they come."""

    def __init__(self, binary: str | None = None, timeout: float = 30.0):
        binary = binary or chromium()
        if binary is None:
            raise BrowserError("no Chromium found: apt-get install -y chromium (or set $XL_CHROMIUM)")
        self.timeout = timeout
        self.requests: dict[str, str] = {}        # requestId -> url
        self.failed_requests: list[dict] = []     # {url, error}
        self.console_errors: list[str] = []
        self.console: list[str] = []              # every console message, for debugging
        self._events: list[dict] = []
        self._id = 0
        self._profile = tempfile.mkdtemp(prefix="xl-chromium-")
        self._proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True)  # its helpers share its process group
        self._loop = asyncio.new_event_loop()
        try:
            self._ws = self._run(self._connect())
            for domain in ["Page", "Network", "Runtime", "Log"]:
                self.call(f"{domain}.enable")
        except BaseException:
            self.close()
            raise

    # -- protocol plumbing -------------------------------------------------------------
    def _run(self, coroutine, timeout: float | None = None):
        return self._loop.run_until_complete(asyncio.wait_for(coroutine, timeout or self.timeout))

    async def _connect(self):
        from tornado.websocket import websocket_connect
        port_file = Path(self._profile, "DevToolsActivePort")
        while not port_file.exists() or not port_file.read_text().strip():
            if self._proc.poll() is not None:
                raise BrowserError(f"Chromium exited with code {self._proc.returncode}")
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        while True:  # the page target appears shortly after the port
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as reply:
                targets = [t for t in json.load(reply) if t.get("type") == "page"]
            if targets:
                break
            await asyncio.sleep(0.05)
        return await websocket_connect(targets[0]["webSocketDebuggerUrl"], max_message_size=1 << 28)

    async def _call(self, method: str, params: dict):
        self._id += 1
        my_id = self._id
        await self._ws.write_message(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            message = await self._ws.read_message()
            if message is None:
                raise BrowserError("the DevTools connection closed")
            message = json.loads(message)
            if message.get("id") == my_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self._event(message)

    async def _drain(self, seconds: float):
        """Read events for a while (the page keeps working while we wait)."""
        end = self._loop.time() + seconds
        while (left := end - self._loop.time()) > 0:
            try:
                message = await asyncio.wait_for(self._ws.read_message(), left)
            except asyncio.TimeoutError:
                return
            if message is None:
                raise BrowserError("the DevTools connection closed")
            message = json.loads(message)
            if "method" in message:
                self._event(message)

    def _event(self, message: dict) -> None:
        method, params = message["method"], message.get("params", {})
        self._events.append(message)
        if method == "Network.requestWillBeSent":
            self.requests[params["requestId"]] = params["request"]["url"]
        elif self._favicon(self.requests.get(params.get("requestId"), "")):
            pass  # the browser asks for /favicon.ico by itself; the book declares none
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            self.failed_requests.append({"url": self.requests.get(params["requestId"], "?"),
                                         "error": params.get("errorText", "")})
        elif method == "Network.responseReceived":
            status = params["response"].get("status", 0)
            if status >= 400:
                self.failed_requests.append({"url": params["response"]["url"], "error": f"HTTP {status}"})
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append(f"{params['type']}: {text}")
            if params["type"] in ("error", "assert"):
                self.console_errors.append(text)
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "")
            self.console_errors.append(f"uncaught: {text}")
        elif method == "Log.entryAdded":
            entry = params["entry"]
            self.console.append(f"{entry['level']}: {entry.get('text', '')}")
            if entry["level"] == "error" and not self._favicon(entry.get("url", "")):
                self.console_errors.append(f"{entry.get('source', '')}: {entry.get('text', '')} "
                                           f"{entry.get('url', '')}".strip())

    @staticmethod
    def _favicon(url: str) -> bool:
        return url.endswith("/favicon.ico")

    def call(self, method: str, **params):
        return self._run(self._call(method, params))

    def wait(self, seconds: float) -> None:
        self._run(self._drain(seconds), timeout=seconds + 5)

    def eval(self, expression: str):
        """Value of a JavaScript expression (awaited if it is a promise)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}...: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float | None = None, what: str | None = None):
        """Poll a JavaScript expression until it is truthy; return its value."""
        end = time.monotonic() + (timeout or self.timeout)
        while True:
            value = self.eval(expression)
            if value:
                return value
            if time.monotonic() > end:
                what = what() if callable(what) else what
                raise BrowserError(f"timed out waiting for {what or expression}")
            self.wait(0.1)

    # -- page actions ------------------------------------------------------------------
    def goto(self, url_or_file) -> None:
        url = to_url(url_or_file)
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", what=f"{url} to load")

    def widget_views(self) -> int:
        """Number of widget views the page asks for (script tags from the executed notebook)."""
        return self.eval("document.querySelectorAll("
                         "'script[type=\"application/vnd.jupyter.widget-view+json\"]').length")

    def wait_for_widgets(self, timeout: float | None = None) -> int:
        """Wait until every widget view is rendered and its visible images decoded."""
        views = self.widget_views()
        if views:
            self.wait_for(f"""(() => {{
                const areas = document.querySelectorAll('.widget-subarea');
                if (areas.length < {views}) return false;
                for (const a of areas) if (!a.children.length) return false;
                for (const img of document.querySelectorAll('.xl-explorer img'))
                    if (img.getClientRects().length && !(img.complete && img.naturalWidth)) return false;
                return true;
            }})()""", timeout=timeout, what=lambda: f"{views} widget views to render (failed requests: "
                f"{self.failed_requests}; console errors: {self.console_errors})")
        return views

    # Font Awesome 5 faces that embed-amd.js declares (its CSS, injected at run time). The
    # browser fetches a face only when some text needs it, so load them on purpose: a face
    # whose file is missing or comes from elsewhere then shows up in the request lists.
    WIDGET_FONTS = ['900 1em "Font Awesome 5 Free"', '400 1em "Font Awesome 5 Free"',
                    '400 1em "Font Awesome 5 Brands"']

    def load_widget_fonts(self) -> dict[str, int]:
        """Load the widget fonts; {font: faces loaded} (0 = declared but not loaded)."""
        counts = self.eval(f"""Promise.all({json.dumps(self.WIDGET_FONTS)}.map(
            f => document.fonts.load(f).then(faces => faces.length, () => 0)))""")
        self.eval("document.fonts.ready.then(() => true)")
        return dict(zip(self.WIDGET_FONTS, counts))

    def explorers(self) -> list[dict]:
        """Per explorer: dropdown labels and options (selected index) and visible image srcs."""
        return self.eval("""Array.from(document.querySelectorAll('.xl-explorer')).map(e => ({
            dropdowns: Array.from(e.querySelectorAll('select')).map(s => ({
                label: (s.closest('.widget-dropdown')?.querySelector('label')?.textContent || '').trim(),
                options: Array.from(s.options).map(o => o.textContent),
                selected: s.selectedIndex})),
            images: Array.from(e.querySelectorAll('img')).filter(i => i.getClientRects().length)
                         .map(i => i.src)}))""")

    def visible_images(self, explorer: int = 0) -> list[str]:
        """src of the images of one explorer that are shown (normally exactly one)."""
        found = self.explorers()
        if explorer >= len(found):
            raise BrowserError(f"no explorer {explorer}: the page shows {len(found)} (class xl-explorer)")
        return found[explorer]["images"]

    def image_bytes(self, explorer: int = 0) -> list[bytes]:
        """The bytes (PNG) of the images of one explorer that are shown."""
        import base64
        encoded = self.eval(f"""(async () => {{
            const e = document.querySelectorAll('.xl-explorer')[{explorer}];
            const shown = Array.from(e.querySelectorAll('img')).filter(i => i.getClientRects().length);
            return Promise.all(shown.map(async i => {{
                const buffer = new Uint8Array(await (await fetch(i.src)).arrayBuffer());
                let text = '';
                for (let k = 0; k < buffer.length; k += 8192)
                    text += String.fromCharCode.apply(null, buffer.subarray(k, k + 8192));
                return btoa(text);
            }}));
        }})()""")
        return [base64.b64decode(x) for x in encoded]

    def select(self, explorer: int = 0, dropdown: int = 0, option: int = 0, timeout: float = 10) -> list[str]:
        """Choose an option in a dropdown as a reader would; return the images then shown."""
        before = self.visible_images(explorer)
        self.eval(f"""(() => {{
            const s = document.querySelectorAll('.xl-explorer')[{explorer}].querySelectorAll('select')[{dropdown}];
            s.selectedIndex = {option};
            s.dispatchEvent(new Event('change', {{bubbles: true}}));
        }})()""")
        try:
            self.wait_for(f"""(() => {{
                const e = document.querySelectorAll('.xl-explorer')[{explorer}];
                const shown = Array.from(e.querySelectorAll('img')).filter(i => i.getClientRects().length);
                return shown.length > 0 && shown.every(i => i.complete && i.naturalWidth)
                       && JSON.stringify(shown.map(i => i.src)) !== {json.dumps(json.dumps(before))};
            }})()""", timeout=timeout, what="the shown image to change")
        except BrowserError:
            pass  # reported by the caller, which sees the same images as before
        return self.visible_images(explorer)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ws.close()
        with contextlib.suppress(Exception):
            self._loop.close()
        for sig in (signal.SIGTERM, signal.SIGKILL):  # the browser and its helper processes
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, sig)
            try:
                self._proc.wait(10)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):  # helpers that outlived the browser
            os.killpg(self._proc.pid, signal.SIGKILL)
        for _ in range(20):  # helpers may still be writing into the profile for a moment
            shutil.rmtree(self._profile, ignore_errors=True)
            if not os.path.exists(self._profile):
                break
            time.sleep(0.1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@contextlib.contextmanager
def open_page(url_or_file, timeout: float = 30.0, settle: float = 0.5):
    """A loaded page with its widgets rendered (if any); the browser closes on exit."""
    with Page(timeout=timeout) as page:
        page.goto(url_or_file)
        page.wait_for_widgets()
        page.eval("document.body.offsetHeight; document.fonts.ready.then(() => true)")  # layout, fonts
        page.wait(settle)  # late requests and errors
        yield page


def check_page(url_or_file, select=(), timeout: float = 30.0) -> dict:
    """Load a page, let its widgets render, optionally change dropdowns; report what happened.

    select: (explorer, dropdown, option) triples applied in order.
    Returns {url, widget_views, explorers (dropdowns and shown images at load), fonts
    (widget pages: Page.load_widget_fonts, every value should be >= 1), selections
    (one per triple: the triple, shown images before and after, changed), failed_requests
    ([{url, error}]: network errors and HTTP >= 400), console_errors ([str]: console.error,
    uncaught exceptions, browser log errors), unexpected_errors (console_errors less
    KNOWN_NOISE: must be empty), console ([str], every
    message), requests (every URL asked for), external_requests (http(s) to another host
    than the page's: must be empty for a book readable offline)}.
    """
    with open_page(url_or_file, timeout=timeout) as page:
        views = page.widget_views()
        report = {"url": to_url(url_or_file), "widget_views": views, "explorers": page.explorers(),
                  "fonts": page.load_widget_fonts() if views else {}, "selections": []}
        for explorer, dropdown, option in select:
            before = page.visible_images(explorer)
            after = page.select(explorer, dropdown, option)
            report["selections"].append({"select": (explorer, dropdown, option), "before": before,
                                         "after": after, "changed": bool(after) and after != before})
        page.wait(0.3)
        host = urllib.parse.urlsplit(report["url"]).netloc
        requests = list(dict.fromkeys(page.requests.values()))
        report.update(failed_requests=list(page.failed_requests), console_errors=list(page.console_errors),
                      unexpected_errors=[e for e in page.console_errors if not known_noise(e)],
                      console=list(page.console), requests=requests,
                      external_requests=[u for u in requests if urllib.parse.urlsplit(u).scheme in ("http", "https")
                                         and urllib.parse.urlsplit(u).netloc != host])
    return report


if __name__ == "__main__":  # python tests/browser.py PAGE [explorer,dropdown,option ...]
    import sys
    triples = [tuple(int(x) for x in arg.split(",")) for arg in sys.argv[2:]]
    print(json.dumps(check_page(sys.argv[1], select=triples), indent=1))
