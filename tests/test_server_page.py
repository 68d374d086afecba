"""The page at `/` in a real headless Chromium (Selenium): upload an image through the file
input, read the drawn result, the JSON and the latency table from the page; against a keyed server,
the page's key prompt."""
from __future__ import annotations

import base64
import json
import shutil

import pytest

from conftest import require_or_skip, skip_for_missing_extra

webdriver = require_or_skip("selenium.webdriver")
require_or_skip("uvicorn")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from test_server import running  # noqa: E402
from visionrt.runtime import Predictor  # noqa: E402
from visionrt.runtime.server.repository import ModelRepository  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        skip_for_missing_extra("needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_page_uploads_an_image_and_shows_the_result(browser, tiny_model_dir, tiny_data):
    image = sorted((tiny_data / "images" / "test").glob("*.png"))[0]
    with Predictor(tiny_model_dir) as predictor:
        expected = predictor.predict(image)[0]
    with running(ModelRepository.load([f"tiny={tiny_model_dir}"])) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: b.find_element(By.ID, "model").get_attribute("value") == "tiny")
        assert browser.find_element(By.ID, "task").text == "task: classify"
        browser.find_element(By.ID, "file").send_keys(str(image))
        wait.until(lambda b: b.find_element(By.ID, "result-state").get_attribute("textContent") != "idle")
        assert browser.find_element(By.ID, "error").text == ""
        assert browser.find_element(By.ID, "summary").text == expected.summary()
        assert json.loads(browser.find_element(By.ID, "json").text) == expected.to_dict()
        picture = browser.find_element(By.ID, "picture").get_attribute("src")
        assert base64.b64decode(picture.removeprefix("data:image/png;base64,")).startswith(b"\x89PNG")
        assert "1 request(s)" in browser.find_element(By.ID, "count").text
        assert browser.find_element(By.ID, "latency").text.count("\n") == 5  # six timing rows


def test_page_asks_for_the_key_and_keeps_it_for_the_session(browser, tiny_model_dir, tiny_data, tmp_path):
    """A keyed server: the page shows the server's 401 message and a key field, asks again after a
    wrong key, then works; the key sits in sessionStorage (this tab only), nothing in localStorage."""
    key = "page-key-0123456789abcdefgh"
    (tmp_path / "keys.txt").write_text(f"{key}\n")
    image = sorted((tiny_data / "images" / "test").glob("*.png"))[0]
    with Predictor(tiny_model_dir) as predictor:
        expected = predictor.predict(image)[0]
    with running(ModelRepository.load([f"tiny={tiny_model_dir}"]), api_key_file=str(tmp_path / "keys.txt")) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: b.find_element(By.ID, "key-form").is_displayed())
        assert "needs an API key" in browser.find_element(By.ID, "key-message").text
        browser.find_element(By.ID, "key").send_keys("wrong-key-0123456789abcdefgh")
        browser.find_element(By.ID, "key-submit").click()
        wait.until(lambda b: "not valid" in b.find_element(By.ID, "key-message").text)
        assert browser.find_element(By.ID, "key-form").is_displayed()
        browser.find_element(By.ID, "key").send_keys(key)
        browser.find_element(By.ID, "key-submit").click()
        wait.until(lambda b: b.find_element(By.ID, "model").get_attribute("value") == "tiny")
        assert not browser.find_element(By.ID, "key-form").is_displayed()
        assert browser.execute_script("return sessionStorage.getItem('visionrt-api-key')") == key
        assert browser.execute_script("return localStorage.length") == 0
        browser.find_element(By.ID, "file").send_keys(str(image))
        wait.until(lambda b: b.find_element(By.ID, "result-state").get_attribute("textContent") != "idle")
        assert browser.find_element(By.ID, "error").text == ""
        assert browser.find_element(By.ID, "summary").text == expected.summary()
