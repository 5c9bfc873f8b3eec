"""A real headless Chromium driven by Selenium, for the search page's tests and screenshots.

Offline: Selenium Manager is never used (it would try to download a driver); the browser
and its driver are the system's (`tests/install-servers.sh` installs them), and Chromium
is told not to reach out (no background networking, component updates, sync or QUIC).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Iterator

CHROMIUM = os.environ.get("SEMHASH_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SEMHASH_CHROMEDRIVER", "/usr/bin/chromedriver")


def missing() -> str | None:
    """Why the browser cannot be started here (None: it can)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{path} is not installed (run `bash tests/install-servers.sh`)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


@contextmanager
def chrome(width: int = 1400, height: int = 1000) -> Iterator["WebDriver"]:  # noqa: F821
    """A fresh headless Chromium (its own profile in a temporary folder), quit afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="semhash-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--disable-extensions", "--disable-default-apps",
                     "--hide-scrollbars", "--force-device-scale-factor=1",
                     f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(argument)
    driver = None
    try:
        driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
        yield driver
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def move_mouse_to(driver, x: float, y: float) -> None:
    """Move the real (W3C) mouse to the viewport's CSS pixel (x, y)."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    actions = ActionBuilder(driver)
    actions.pointer_action.move_to_location(int(round(x)), int(round(y)))
    actions.perform()


def wait_for(driver, condition, timeout: float = 15, message: str = ""):
    """WebDriverWait(driver, timeout).until(condition): the condition's first truthy value."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition, message)


def wait_for_script(driver, script: str, timeout: float = 15, message: str = ""):
    """The first truthy value of a JavaScript expression (``return`` is added)."""
    return wait_for(driver, lambda d: d.execute_script(f"return {script}"), timeout, message or script)
