"""Pages in a real browser: Debian's headless Chromium driven by Selenium, and the site
served over real HTTP on 127.0.0.1 with every request it answered on record.

``chromium(workdir)`` starts ``/usr/bin/chromium`` through ``/usr/bin/chromedriver``
(``apt-get install chromium chromium-driver``), named explicitly so that Selenium Manager
never runs, let alone downloads a browser; it refuses to go on if Selenium Manager ran.
``SiteServer(app)`` serves a WSGI app with werkzeug's threaded server in a thread, so a
test can see what the browser sent (``seen``, ``wait_for``) and put other pages beside the
site on the same origin (``pages``).
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from werkzeug.serving import make_server

from harness.agents import desktop_user_agent

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
WINDOW = (1280, 900)  # px: the window size of every test, and of the screenshots
WAIT_S = 10.0  # how long a test waits for the browser to do what it must
SHUTDOWN_POLL_S = 0.05  # how often the server's loop looks for a shutdown request


class BrowserMissing(RuntimeError):
    """Chromium or chromedriver is not installed where the Debian packages put them."""


def browser_missing() -> str | None:
    """Why the browser cannot start here, or None."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        return f"{', '.join(missing)} missing: apt-get install chromium chromium-driver"
    return None


def package_version(binary: Path) -> str:
    """``1.2.3.4`` from ``<binary> --version``."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    return next(word for word in out.split() if word[:1].isdigit())


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def chromium(workdir: Path) -> webdriver.Chrome:
    """A headless Chromium with a fresh profile under ``workdir``; raises BrowserMissing."""
    why = browser_missing()
    if why:
        raise BrowserMissing(why)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={workdir / 'profile'}")
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    # headless Chromium says "HeadlessChrome", which crawler lists match: the pages are
    # tested as a person's browser sees them
    options.add_argument(f"--user-agent={desktop_user_agent(package_version(CHROMIUM))}")
    # Selenium Manager, if it ever ran, would create this folder (and stay offline).
    manager_cache = workdir / "selenium-manager"
    with _environment(SE_CACHE_PATH=str(manager_cache), SE_OFFLINE="true"):
        driver = webdriver.Chrome(
            service=Service(executable_path=str(CHROMEDRIVER)), options=options
        )
    if manager_cache.exists():
        driver.quit()
        raise RuntimeError("Selenium Manager ran: the browser must be Debian's, named explicitly")
    return driver


@dataclass(frozen=True)
class Seen:
    """A request the site answered."""

    method: str
    path: str
    headers: dict[str, str]  # "Authorization", "Sec-Purpose", …
    status: int


class SiteServer:
    """``app`` on ``http://127.0.0.1:<port>`` (``url``), recording each request it answers.

    ``pages[path] = html`` serves a page of the test's own beside the app (a page that
    links to or embeds the site's), on the same origin.
    """

    def __init__(self, app) -> None:
        self.app = app
        self.pages: dict[str, str] = {}
        self.seen: list[Seen] = []
        self._changed = threading.Condition()
        self._server = make_server("127.0.0.1", 0, self, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_S},
            daemon=True,
        )
        self._thread.start()

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        headers = {
            k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")
        }
        statuses: list[int] = []

        def recording(status: str, response_headers, exc_info=None):
            statuses.append(int(status.split()[0]))
            return start_response(status, response_headers, exc_info)

        if path in self.pages:
            body = self.pages[path].encode()
            recording("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            result = [body]
        else:
            result = self.app(environ, recording)
        with self._changed:  # the app has done its work (a view is counted) by now
            self.seen.append(Seen(environ["REQUEST_METHOD"], path, headers, statuses[-1]))
            self._changed.notify_all()
        return result

    def requests(self, method: str, path: str) -> list[Seen]:
        with self._changed:
            return [s for s in self.seen if s.method == method and s.path == path]

    def wait_for(self, method: str, path: str, n: int = 1) -> list[Seen]:
        """The first ``n`` ``method path`` requests, once the site has answered them."""
        with self._changed:
            if not self._changed.wait_for(
                lambda: len(self.requests(method, path)) >= n, timeout=WAIT_S
            ):
                raise AssertionError(f"no {method} {path} (x{n}) within {WAIT_S}s: {self.seen}")
            return self.requests(method, path)[:n]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
