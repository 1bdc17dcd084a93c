"""The web page in a real headless browser (Debian's chromium and chromium-driver, driven by
selenium): upload photos, see the classification and the neighbours' thumbnails, a head's report
and an index's map. Screenshots go to test-artifacts/ (described in the README)."""
from __future__ import annotations

import base64
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from classifiers.heads import TrainHeadConfig, train_head
from embedsvc.service.config import ServeConfig
from embedsvc.service.grpc_server import Server

pytestmark = pytest.mark.slow  # the real effnet-lite0 (an ImageNet head and FMNIST features)
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PER_CLASS = 4  # indexed test images per class
WAIT_S = 60


@pytest.fixture(scope="module")
def site(fmnist_store, fmnist_dir, tmp_path_factory):
    data = tmp_path_factory.mktemp("web")
    # a centroid head: its learning curve takes a second, not a minute
    train_head(fmnist_store.root, data / "heads" / "fmnist",
               TrainHeadConfig(kind="centroid", learning_curve=True), progress=False)
    srv = Server(ServeConfig(port=0, http_port=0, data_dir=str(data))).start()
    base = f"http://127.0.0.1:{srv.http_port}"
    # test images the head never saw, indexed through the HTTP API with their labels
    items = [{"image": base64.b64encode(p.read_bytes()).decode(), "metadata": {"label": cls.name}}
             for cls in sorted((fmnist_dir / "test").iterdir())
             for p in sorted(cls.glob("*.png"))[-PER_CLASS:]]
    r = httpx.post(f"{base}/v1/indexes/fmnist/upsert", json={"items": items}, timeout=120)
    assert r.status_code == 200, r.text
    query = sorted((fmnist_dir / "test" / "bag").glob("*.png"))[-PER_CLASS - 1]
    yield base, query
    srv.stop(grace=5)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("Debian's chromium and chromium-driver are missing; `make test` installs them "
                    "(apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())
    # no sandbox as root; no background networking: this machine has no internet to reach
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--window-size=1280,1000",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(lambda d: condition(d), message=what)


def _upload(driver, path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "file").send_keys(str(path))


def _select(driver, select_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _wait(driver, lambda d: value in [o.text for o in Select(d.find_element(By.ID, select_id))
                                      .options], f"{value} in #{select_id}")
    Select(driver.find_element(By.ID, select_id)).select_by_visible_text(value)


def _loaded_thumbnails(driver) -> list:
    from selenium.webdriver.common.by import By

    imgs = driver.find_elements(By.CSS_SELECTOR, "#neighbours .neighbour img")
    return [i for i in imgs if driver.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth > 0", i)]


def test_upload_classifies_and_shows_the_neighbours(site, browser, photos):
    from selenium.webdriver.common.by import By

    base, query = site
    ARTIFACTS.mkdir(exist_ok=True)
    browser.get(base + "/")
    from selenium.webdriver.support.ui import Select

    # the page opens on the trained head, not ImageNet's, with that head's OOD threshold
    head = _wait(browser, lambda d: Select(d.find_element(By.ID, "head")).first_selected_option
                 .text not in ("", "(none)") and d.find_element(By.ID, "head"), "the heads")
    assert Select(head).first_selected_option.text == "fmnist"
    assert browser.find_element(By.ID, "max-ood").get_attribute("value") == "0.99"
    _select(browser, "index", "fmnist")
    _upload(browser, query)
    label = _wait(browser, lambda d: d.find_element(By.ID, "label").text or None,
                  "a classification")
    thumbs = _wait(browser, lambda d: len(_loaded_thumbnails(d)) == 8 and _loaded_thumbnails(d),
                   "8 neighbour thumbnails")
    captions = [t.find_element(By.XPATH, "..").text for t in thumbs]
    assert label == "bag", label
    assert sum("bag" in c for c in captions) >= PER_CLASS - 1, captions  # bags find bags
    assert all("·" in c for c in captions)  # id and score under each
    bars = browser.find_elements(By.CSS_SELECTOR, "#classification .bar")
    assert len(bars) == 6 and "out-of-distribution" in bars[-1].text  # top 5 + the OOD score
    assert "1280-d vector from effnet-lite0" in browser.find_element(By.ID, "embedding").text
    browser.save_screenshot(str(ARTIFACTS / "web-try.png"))

    # a photo far from Fashion-MNIST: the fmnist head abstains (its OOD score passes 0.99) ...
    _upload(browser, photos["chelsea"])
    _wait(browser, lambda d: d.find_element(By.ID, "label").text.startswith("unknown"),
          "the fmnist head abstaining on a cat")
    # ... and the ImageNet head names it
    _select(browser, "head", "imagenet")
    _wait(browser, lambda d: "cat" in d.find_element(By.ID, "label").text, "an ImageNet cat")


def test_a_heads_report_and_an_index_map(site, browser):
    from selenium.webdriver.common.by import By

    base, _ = site
    browser.get(base + "/#/heads/fmnist")
    _wait(browser, lambda d: len([i for i in d.find_elements(By.CSS_SELECTOR, ".figures img")
                                  if d.execute_script("return arguments[0].naturalWidth", i)]) == 2,
          "the confusion matrix and the learning curve")
    report = browser.find_element(By.ID, "head-report").text
    assert "centroid head on effnet-lite0" in report and "accuracy" in report
    assert "Drift of live inputs" in report
    browser.save_screenshot(str(ARTIFACTS / "web-head.png"))

    browser.get(base + "/#/maps/fmnist")
    _wait(browser, lambda d: "of 40 vectors" in d.find_element(By.ID, "map-info").text, "the map")
    legend = browser.find_elements(By.CSS_SELECTOR, "#map-legend .legend-item")
    assert len(legend) == 10
    # click the first point: its thumbnail and metadata appear
    point = browser.execute_script(
        "const m = state.map, at = mapScale(), c = document.getElementById('map-canvas');"
        "const r = c.getBoundingClientRect(), [x, y] = at(m.points[0]);"
        "return [r.left + x * r.width / c.width, r.top + y * r.height / c.height,"
        "        m.points[0].label];")
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = browser.find_element(By.ID, "map-canvas")
    rect = canvas.rect
    ActionChains(browser).move_to_element_with_offset(
        canvas, point[0] - rect["x"] - rect["width"] / 2,
        point[1] - rect["y"] - rect["height"] / 2).click().perform()
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#map-point img"), "a clicked point")
    assert point[2] in browser.find_element(By.ID, "map-point").text
    browser.save_screenshot(str(ARTIFACTS / "web-map.png"))


def test_with_auth_on_the_page_asks_for_the_token_and_then_works(browser, photos, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from conftest import TINY

    srv = Server(ServeConfig(port=0, http_port=0, data_dir=str(tmp_path), default_backbone=TINY,
                             auth_token="page-token")).start()
    try:
        browser.get(f"http://127.0.0.1:{srv.http_port}/")
        _wait(browser, lambda d: "needs a token" in d.find_element(By.ID, "alert").text,
              "the page saying it needs the token")
        box = browser.find_element(By.ID, "token")
        box.send_keys("page-token", Keys.TAB)  # a change event: stored, and the page reloads
        _wait(browser, lambda d: TINY in d.find_element(By.ID, "server").text, "server info")
        assert not browser.find_element(By.ID, "alert").is_displayed()
        _upload(browser, photos["chelsea"])
        _wait(browser, lambda d: f"256-d vector from {TINY}" in
              d.find_element(By.ID, "embedding").text, "an embedding with the token")
    finally:
        srv.stop(grace=2)


def test_a_sentence_is_embedded_classified_and_searched_with_the_neighbours_texts(
        browser, tmp_path):
    """A head and a collection of movie snippets on minilm-l6: the page's text box embeds,
    classifies and searches a sentence, and shows the neighbours' texts (not thumbnails)."""
    import json

    from selenium.webdriver.common.by import By

    from embedsvc.datasets.fetch import fetch_dataset
    from embedsvc.store import embed_dataset

    fetch_dataset("sentiment-movies", tmp_path / "movies", progress=False, limit=80)
    rows = [json.loads(x) for x in (tmp_path / "movies" / "manifest.jsonl").read_text().splitlines()]
    embed_dataset(tmp_path / "movies" / "manifest.jsonl", tmp_path / "store", progress=False)
    data = tmp_path / "data"
    train_head(tmp_path / "store", data / "heads" / "movies", TrainHeadConfig(kind="logreg"),
               progress=False)
    srv = Server(ServeConfig(port=0, http_port=0, data_dir=str(data),
                             default_backbone="tiny-random")).start()
    try:
        base = f"http://127.0.0.1:{srv.http_port}"
        items = [{"text": r["text"], "metadata": {"label": r["label"]}} for r in rows[-40:]]
        r = httpx.post(f"{base}/v1/indexes/reviews/upsert", json={"items": items}, timeout=120)
        assert r.status_code == 200, r.text
        browser.get(base + "/")
        _select(browser, "head", "movies")
        _select(browser, "index", "reviews")
        browser.find_element(By.ID, "text").send_keys("A wonderful, moving film with a great cast.")
        browser.find_element(By.ID, "text-go").click()
        label = _wait(browser, lambda d: d.find_element(By.ID, "label").text or None,
                      "a classification of the sentence")
        quotes = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR,
                                                          "#neighbours .hit-text"), "the neighbours' texts")
        texts = {" ".join(i["text"].split()) for i in items}  # as a browser renders spaces
        assert label == "positive" and len(quotes) == 8, label
        assert all(" ".join(q.text.split()) in texts for q in quotes), [q.text for q in quotes]
        assert "384-d vector from minilm-l6" in browser.find_element(By.ID, "embedding").text
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "web-text.png"))
    finally:
        srv.stop(grace=5)
