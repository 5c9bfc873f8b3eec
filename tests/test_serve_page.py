"""The search page of `semhash serve`, used as a person would: a real headless Chromium
(Selenium) against a real server process, on a small 20 Newsgroups collection and on a
tiny image collection. Skipped where Chromium or its driver is missing
(`tests/install-servers.sh` installs them)."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

from tests import browser
from tests.servers import semhash_server

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(browser.missing() is not None, reason=browser.missing() or "")]
GROUPS = {"comp.graphics", "rec.sport.hockey", "sci.space", "talk.politics.mideast"}
QUERY = "space shuttle launch orbit"


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def driver():
    with browser.chrome(1400, 1000) as chrome:
        chrome.set_page_load_timeout(30)
        yield chrome


@pytest.fixture(scope="module")
def text_url(indexed_news, tmp_path_factory):
    with semhash_server(indexed_news) as url:
        yield url


@pytest.fixture(scope="module")
def image_url(indexed_photos):
    database, photos = indexed_photos
    with semhash_server(database) as url:
        yield url, photos / "red" / "000.png"


# ----------------------------------------------------------------------------- helpers
def open_page(driver, url: str, fragment: str = "") -> None:
    """A fresh load of the page (not a same-document hash change), ready to use: the
    collection line filled in and the map loaded (or hidden, for a collection without one)."""
    driver.get("about:blank")
    driver.get(f"{url}/{fragment}")
    browser.wait_for_script(driver, "window.semhashPage && document.getElementById('collection').textContent !== "
                                    "'loading…' && (window.semhashPage.state.map !== null || "
                                    "document.getElementById('map-panel').hidden)", message="the page did not load")


@pytest.fixture
def page(driver, text_url):
    """The page of the text collection at its start (no fragment, nothing shown). It is loaded
    once and then used as a person would, by its links and the back button."""
    loaded = driver.execute_script("return location.origin") == text_url and driver.execute_script(
        "return Boolean(window.semhashPage && window.semhashPage.state.map)")
    if loaded:
        driver.execute_script("location.hash = ''")
        browser.wait_for(driver, lambda d: not hits(d) and not d.find_element("id", "status").text
                         and not d.find_element("id", "document").is_displayed(), message="the page did not reset")
    else:
        open_page(driver, text_url)
    return driver


def search(driver, text: str) -> None:
    box = driver.find_element("id", "query")
    box.clear()
    box.send_keys(text)
    driver.find_element("css selector", "#text-form button[type=submit]").click()


def hits(driver):
    return driver.find_elements("css selector", "ol#hits > li.hit")


def wait_for_hits(driver):
    """The hits, once a search has answered."""
    def shown(d):
        found = hits(d)
        return found if found and "Searching" not in d.find_element("id", "status").text else False
    return browser.wait_for(driver, shown, message="no hits were shown")


def page_errors(driver, sources=("javascript", "network", "console-api")) -> list[str]:
    """The browser's error lines since the last call (not the 400 answers to bad queries, on purpose)."""
    return [entry["message"] for entry in driver.get_log("browser")
            if entry["level"] == "SEVERE" and entry.get("source", "javascript") in sources
            and "status of 400 (Bad Request)" not in entry["message"]]


# ----------------------------------------------------------------------------- text collection
def test_page_loads_and_names_the_collection(driver, text_url):
    driver.get_log("browser")  # drop what came before
    open_page(driver, text_url)
    line = driver.find_element("id", "collection").text
    assert "800 documents" in line and "4 labels" in line and "news.db" in line
    assert driver.find_element("id", "text-form").is_displayed()
    assert not driver.find_element("id", "image-form").is_displayed()
    assert driver.find_element("id", "map").is_displayed()
    assert driver.find_element("id", "map-note").text.startswith("800 items at their 2-D codes, coloured by label (4)")
    legend = [item.text for item in driver.find_elements("css selector", "#legend li")]
    assert legend == sorted(GROUPS)
    assert not driver.find_element("id", "tooltip").is_displayed()
    assert driver.title == "semhash"
    assert page_errors(driver) == []


def test_a_text_search_shows_hits_with_title_label_distance_and_snippet(page):
    search(page, QUERY)
    found = wait_for_hits(page)
    assert len(found) == 20
    assert page.execute_script("return location.hash") == "#q=" + QUERY.replace(" ", "%20")
    assert page.find_element("id", "status").text == "20 documents nearest in meaning to your query"
    labels, distances = [], []
    for hit in found:
        doc_id = hit.get_attribute("data-id")
        title = hit.find_element("css selector", "a.title")
        assert title.text.strip()
        assert title.get_attribute("href").endswith(f"#doc={doc_id}")
        labels.append(hit.find_element("css selector", ".label").text)
        distance = hit.find_element("css selector", ".distance").text
        assert re.fullmatch(r"distance \d+", distance), distance  # Hamming distances of 16-bit codes
        distances.append(int(distance.split()[1]))
        assert hit.find_element("css selector", "p.snippet").text.strip()
        assert hit.find_element("css selector", "a.similar").get_attribute("href").endswith(f"#similar={doc_id}")
    assert set(labels) <= GROUPS  # how good the hits are is the benchmarks' business
    assert distances == sorted(distances) and distances[-1] <= 16


def test_similar_link_shows_the_documents_nearest_to_a_hit(page):
    search(page, QUERY)
    first = wait_for_hits(page)[0]
    doc_id, title = first.get_attribute("data-id"), first.find_element("css selector", "a.title").text
    first.find_element("css selector", "a.similar").click()
    browser.wait_for(page, lambda d: d.find_element("id", "status").text == f"20 documents nearest to “{title}”",
                     message="the status did not name the document")
    assert page.execute_script("return location.hash") == f"#similar={doc_id}"
    found = hits(page)
    assert len(found) == 20 and doc_id not in [hit.get_attribute("data-id") for hit in found]
    assert page.execute_script("return window.semhashPage.state.marks.item") == int(doc_id)
    assert page.execute_script("return window.semhashPage.state.marks.query") is None


def test_a_title_opens_the_whole_document_and_back_returns_to_the_hits(page, text_url):
    search(page, QUERY)
    first = wait_for_hits(page)[0]
    doc_id, title = first.get_attribute("data-id"), first.find_element("css selector", "a.title").text
    first.find_element("css selector", "a.title").click()
    view = browser.wait_for(page, lambda d: d.find_element("id", "document").is_displayed()
                            and d.find_element("id", "document"), message="no document view")
    stored = _get_json(f"{text_url}/api/documents/{doc_id}")
    assert page.execute_script("return location.hash") == f"#doc={doc_id}"
    assert view.find_element("id", "document-title").text == title
    assert page.find_element("id", "document-text").get_property("textContent") == stored["text"]
    assert len(stored["text"]) > 200
    assert view.find_element("id", "document-label").text == stored["label"]
    assert view.find_element("id", "document-similar").get_attribute("href").endswith(f"#similar={doc_id}")
    assert hits(page) == []
    page.back()
    assert wait_for_hits(page)[0].get_attribute("data-id") == doc_id
    assert not page.find_element("id", "document").is_displayed()
    assert page.find_element("id", "query").get_property("value") == QUERY


def _isolated_point(driver) -> int:
    """The map point farthest from any other among those inside the window (so that the
    mouse on it can only mean it)."""
    return driver.execute_script("""
        const map = window.semhashPage.map, n = map.points.length;
        let best = -1, bestGap = -1;
        for (let i = 0; i < n; i++) {
          const p = map.pointOnPage(i);
          if (p.x < 5 || p.y < 5 || p.x > window.innerWidth - 5 || p.y > window.innerHeight - 5) continue;
          let gap = Infinity;
          for (let j = 0; j < n; j++) {
            if (j !== i) gap = Math.min(gap, Math.hypot(map.points[i][0] - map.points[j][0],
                                                        map.points[i][1] - map.points[j][1]));
          }
          if (gap > bestGap) [best, bestGap] = [i, gap];
        }
        return best;""")


def test_hovering_the_map_shows_the_title_of_the_point_and_a_click_opens_it(page):
    from selenium.webdriver.common.action_chains import ActionChains

    page.execute_script("document.getElementById('map').scrollIntoView({block: 'center'})")
    i = _isolated_point(page)
    assert i >= 0, "no map point inside the window"
    point = page.execute_script(f"return window.semhashPage.map.pointOnPage({i})")
    served = page.execute_script("return window.semhashPage.state.map")  # as /api/map gave it
    assert served["ids"][i] == point["id"]
    tooltip = page.find_element("id", "tooltip")
    # A quickly trained map may draw several items on one pixel: the tooltip names one of them.
    same_place = page.execute_script(f"""
        const map = window.semhashPage.map, [x, y] = map.points[{i}];
        return map.points.flatMap(([u, v], j) => Math.hypot(u - x, v - y) < 1 ? [j] : []);""")
    titles = {served["titles"][j].strip() for j in same_place}
    browser.move_mouse_to(page, point["x"], point["y"])
    # Wait for such a title: a tooltip left from an earlier hover may still be showing.
    browser.wait_for(page, lambda d: tooltip.is_displayed() and tooltip.find_element("css selector", "strong").text in titles,
                     message=f"no tooltip with one of {sorted(titles)[:5]} on hovering the point")
    i = next(j for j in same_place if served["titles"][j].strip() == tooltip.find_element("css selector", "strong").text)
    point = page.execute_script(f"return window.semhashPage.map.pointOnPage({i})")
    assert tooltip.text.splitlines()[-1] == served["label_names"][served["labels"][i]]
    box = page.execute_script("return document.getElementById('tooltip').getBoundingClientRect().toJSON()")
    assert abs(box["top"] - (point["y"] + 12)) < 1.5, (box, point)  # just below the point, beside it
    assert abs(box["left"] - (point["x"] + 12)) < 1.5 or abs(box["right"] - (point["x"] - 12)) < 1.5, (box, point)
    # the point under the mouse is where it is drawn: its pixel has a label's colour
    pixel = page.execute_script(f"""
        const map = window.semhashPage.map, [x, y] = map.points[{i}];
        return [...map.canvas.getContext('2d').getImageData(Math.round(x * map.scale), Math.round(y * map.scale), 1, 1).data];""")
    assert pixel[3] > 0 and pixel[:3] != [255, 255, 255], pixel
    # leaving the map hides the tooltip; a click on a point opens its document
    header = page.execute_script("return document.querySelector('header').getBoundingClientRect().toJSON()")
    browser.move_mouse_to(page, header["left"] + 5, header["top"] + 5)
    browser.wait_for(page, lambda d: not tooltip.is_displayed(), message="the tooltip stayed")
    browser.move_mouse_to(page, point["x"], point["y"])
    ActionChains(page).click().perform()
    browser.wait_for(page, lambda d: d.find_element("id", "document").is_displayed(), message="no document view")
    # The click opens the item under the mouse: one of those drawn on that pixel.
    opened = page.execute_script("return location.hash")
    assert opened in {f"#doc={served['ids'][j]}" for j in same_place}, (opened, [served["ids"][j] for j in same_place])
    j = served["ids"].index(int(opened.removeprefix("#doc=")))
    assert page.find_element("id", "document-title").text == served["titles"][j].strip()
    assert page.execute_script("return window.semhashPage.state.marks.item") == served["ids"][j]


def test_a_text_search_marks_the_query_and_its_hits_on_the_map(page):
    search(page, QUERY)
    found = wait_for_hits(page)
    query = browser.wait_for_script(page, "window.semhashPage.state.marks.query", message="no query mark")
    assert len(query) == 2 and all(isinstance(x, (int, float)) for x in query)
    marked = page.execute_script("return [...window.semhashPage.state.marks.hits]")
    assert sorted(marked) == sorted(int(hit.get_attribute("data-id")) for hit in found)
    # the star is drawn there, in its orange
    pixel = page.execute_script("""
        const map = window.semhashPage.map, q = window.semhashPage.state.marks.query, [x, y] = map.toScreen(q[0], q[1]);
        return [...map.canvas.getContext('2d').getImageData(Math.round(x * map.scale), Math.round(y * map.scale), 1, 1).data];""")
    assert pixel == [0xe8, 0x71, 0x0a, 255]


def test_a_query_of_unknown_words_shows_the_error_line(page):
    search(page, QUERY)
    wait_for_hits(page)
    search(page, "zzqqxx")
    line = browser.wait_for(page, lambda d: "error" in d.find_element("id", "status").get_attribute("class").split()
                            and d.find_element("id", "status"), message="no error line")
    assert line.text.startswith("none of the query's words is in the collection's vocabulary"), line.text
    assert line.value_of_css_property("color") == "rgba(179, 38, 30, 1)"
    assert hits(page) == [], "the hits of the previous query stayed under the error"
    assert page.execute_script("return window.semhashPage.state.marks.query") is None
    search(page, QUERY)  # a good query again: hits, and no error
    wait_for_hits(page)
    assert "error" not in page.find_element("id", "status").get_attribute("class")


def test_the_page_fetched_nothing_from_elsewhere(page, text_url):
    search(page, QUERY)
    wait_for_hits(page)
    browser.wait_for_script(page, "window.semhashPage.state.marks.query")
    names = page.execute_script("return performance.getEntriesByType('resource').map((entry) => entry.name)")
    paths = {name.removeprefix(text_url).split("?")[0] for name in names}
    assert {"/static/app.js", "/static/style.css", "/api/info", "/api/map", "/api/search", "/api/encode"} <= paths
    assert all(name.startswith(text_url + "/") for name in names), names
    assert page.current_url.startswith(text_url + "/")
    assert page_errors(page) == []


def test_the_map_is_drawn_again_when_the_page_is_reloaded(page):
    page.refresh()
    browser.wait_for_script(page, "window.semhashPage && (window.semhashPage.state.map !== null || "
                                  "document.getElementById('map-panel').hidden)", message="the page did not load")
    assert page.find_element("id", "map").is_displayed()
    assert page.execute_script("return window.semhashPage.map.points.length") == 800


# ----------------------------------------------------------------------------- image collection
def test_an_uploaded_image_shows_the_montage_of_nearest_images(driver, image_url):
    url, picture = image_url
    page_errors(driver)  # drop what came before
    open_page(driver, url)
    assert not driver.find_element("id", "map-panel").is_displayed()  # no map model: no map
    assert "60 images" in driver.find_element("id", "collection").text
    assert driver.find_element("id", "image-form").is_displayed()
    assert not driver.find_element("id", "text-form").is_displayed()
    driver.find_element("id", "image-file").send_keys(str(picture))
    figures = browser.wait_for(driver, lambda d: d.find_elements("css selector", "#montage > figure.hit"),
                               message="no montage")
    assert len(figures) == 20
    assert driver.find_element("id", "status").text == "20 images nearest to 000.png"
    browser.wait_for_script(driver, "[...document.querySelectorAll('#montage img')].every("
                                    "(img) => img.complete && img.naturalWidth > 0)", message="images did not load")
    assert driver.find_element("css selector", "#montage > figure.query img").get_attribute("src").startswith("blob:")
    captions = [figure.text for figure in figures]
    assert sum(caption.startswith("red") for caption in captions[:5]) >= 4, captions
    sizes = driver.execute_script("return [...document.querySelectorAll('#montage figure.hit img')].map("
                                  "(img) => [img.naturalWidth, img.naturalHeight])")
    assert all(size == [96, 96] for size in sizes), sizes  # 32 pixels, scaled 3 times
    # an image's link: the images nearest to it
    first_id = figures[0].get_attribute("data-id")
    figures[0].find_element("css selector", "a.similar").click()
    browser.wait_for(driver, lambda d: d.execute_script("return location.hash") == f"#similar={first_id}"
                     and "images nearest to" in d.find_element("id", "status").text
                     and d.find_elements("css selector", "#montage > figure.query"), message="no similar images")
    assert first_id not in [f.get_attribute("data-id") for f in driver.find_elements("css selector", "#montage > figure.hit")]
    names = driver.execute_script("return performance.getEntriesByType('resource').map((entry) => entry.name)")
    assert all(name.startswith(url + "/") or name.startswith("blob:" + url + "/") for name in names), names
    assert page_errors(driver, sources=("javascript",)) == []  # (the 404 of /api/map is expected: no map model)
