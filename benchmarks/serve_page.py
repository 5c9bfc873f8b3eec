"""A screenshot of the search page of ``semhash serve``, as a person sees it after a search.

Starts ``semhash serve --db DB`` on a free port of 127.0.0.1, opens its page in a headless
Chromium (offline: the system's browser and driver, as in `tests/browser.py`) with a
1400x900 viewport, types a query into the search box, waits for the hits and for the
query's star on the map, hovers the mouse over a hit's point near the star so that its
tooltip shows, and saves the page as a PNG.

Usage::

    python benchmarks/serve_page.py --db /tmp/srv/news.db     # -> benchmarks/results/serve-page.png
    python benchmarks/serve_page.py --db small.db --out /tmp/page.png

``--out`` is the PNG's path, or a folder to write ``serve-page.png`` into. Needs Chromium and
chromedriver (`bash tests/install-servers.sh`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import REPO, RESULTS, log

sys.path.insert(0, str(REPO))  # the tests' helpers: the browser, the server process
from tests import browser  # noqa: E402
from tests.servers import semhash_server  # noqa: E402

QUERY = "the space shuttle launch was delayed, the orbiter will reach orbit next week"

# The map points to hover, best first: the hits drawn nearest to the query's star (any
# points when no hit is on the map), not under the star itself, so both can be seen.
NEAR_STAR = """
const page = window.semhashPage, map = page.map, q = page.state.marks.query;
const [sx, sy] = map.toScreen(q[0], q[1]), [left, top] = map.origin();
const hits = [...page.state.marks.hits].map((id) => map.index.get(id)).filter((i) => i !== undefined);
const distance = (i) => Math.hypot(map.points[i][0] - sx, map.points[i][1] - sy);
const candidates = (hits.length ? hits : map.points.map((_, i) => i)).filter((i) => distance(i) >= 14);
candidates.sort((a, b) => distance(a) - distance(b));
return {star: {x: left + sx, y: top + sy}, points: candidates.slice(0, 12).map((i) => (
  {...map.pointOnPage(i), title: page.state.map.titles[i], distance: distance(i)}))};
"""
STAR_RADIUS = 14  # CSS pixels around the star's centre that the tooltip must leave uncovered


def hover_near_star(driver) -> dict:
    """Hover the first point near the star whose tooltip leaves the star in sight."""
    found = driver.execute_script(NEAR_STAR)
    star = found["star"]
    for point in found["points"] or [None]:
        if point is None:
            raise SystemExit("no map point to hover")
        browser.move_mouse_to(driver, point["x"], point["y"])
        browser.wait_for(driver, lambda d: d.find_element("id", "tooltip").is_displayed(), timeout=10,
                         message="no tooltip")
        box = driver.execute_script("return document.getElementById('tooltip').getBoundingClientRect().toJSON()")
        covers = (box["left"] - STAR_RADIUS < star["x"] < box["right"] + STAR_RADIUS
                  and box["top"] - STAR_RADIUS < star["y"] < box["bottom"] + STAR_RADIUS)
        if not covers:
            break
    return {**point, "shown": driver.find_element("css selector", "#tooltip strong").text}


def set_viewport(driver, width: int, height: int) -> None:
    """Size the window so that the page itself (the viewport) is width x height CSS pixels."""
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    size = driver.get_window_size()
    driver.set_window_size(size["width"] + width - inner[0], size["height"] + height - inner[1])
    browser.wait_for_script(driver, f"window.innerWidth === {width} && window.innerHeight === {height}",
                            timeout=5, message="the viewport did not take its size")


def screenshot(database: str, out: Path, query: str = QUERY, width: int = 1400, height: int = 900) -> dict:
    started = time.perf_counter()
    with semhash_server(database) as url, browser.chrome(width, height) as driver:
        served = time.perf_counter()
        driver.get(f"{url}/")
        set_viewport(driver, width, height)
        browser.wait_for_script(driver, "window.semhashPage && window.semhashPage.state.info !== null && "
                                        "(window.semhashPage.state.map !== null || "
                                        "document.getElementById('map-panel').hidden)", timeout=60,
                                message="the page did not load")
        if driver.execute_script("return window.semhashPage.state.map === null"):
            raise SystemExit(f"{database} has no 2-D map model: the page shows no map")
        loaded = time.perf_counter()
        box = driver.find_element("id", "query")
        box.send_keys(query)
        driver.find_element("css selector", "#text-form button[type=submit]").click()
        browser.wait_for(driver, lambda d: d.find_elements("css selector", "ol#hits > li.hit")
                         or "error" in d.find_element("id", "status").get_attribute("class"),
                         timeout=60, message="no hits")
        status = driver.find_element("id", "status")
        if "error" in status.get_attribute("class"):
            raise SystemExit(f"the search failed: {status.text}")
        browser.wait_for_script(driver, "window.semhashPage.state.marks.query", timeout=60, message="no query star")
        searched = time.perf_counter()
        driver.execute_script("window.scrollTo(0, 0)")
        target = hover_near_star(driver)
        time.sleep(0.2)  # one more frame painted
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(driver.get_screenshot_as_png())
        hits = driver.find_elements("css selector", "ol#hits > li.hit")
        return {"out": str(out), "url": url, "hits": len(hits), "status": status.text,
                "first_hit": hits[0].find_element("css selector", "a.title").text,
                "hovered": target["shown"], "hovered_px_from_star": round(target["distance"], 1),
                "seconds": {"server": round(served - started, 2), "page": round(loaded - served, 2),
                            "search": round(searched - loaded, 2)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="/tmp/srv/news.db", help="The database to serve (a text collection with a map).")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve-page.png",
                        help="The PNG to write, or a folder for serve-page.png.")
    parser.add_argument("--query", default=QUERY, help="What to type into the search box.")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args()
    missing = browser.missing()
    if missing:
        raise SystemExit(missing)
    out = args.out / "serve-page.png" if args.out.is_dir() else args.out
    result = screenshot(args.db, out, args.query, args.width, args.height)
    log(f"wrote {result['out']}: {result['hits']} hits ({result['status']}); first: {result['first_hit']!r}; "
        f"hovering {result['hovered']!r}, {result['hovered_px_from_star']} px from the star; "
        f"seconds: {result['seconds']}")


if __name__ == "__main__":
    main()
