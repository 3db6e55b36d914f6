"""The run's page (index.html) in a real browser: headless Chromium opens it from the run folder, every
image on it decodes, and the top-1 it shows is `vitkit eval`'s (issue 20)."""
import json

import pytest

from vitkit.cli import main

pytestmark = pytest.mark.slow


def test_the_run_page_shows_every_picture_and_evals_top1(browser, tmp_path, capsys):
    from selenium.webdriver.common.by import By
    run = tmp_path / "run"
    assert main(["train", "--model", "vit_nano_patch2_8", "--data", "digits", "--epochs", "2", "--batch-size", "64",
                 "--threads", "1", "--out", str(run)]) == 0  # the pictures and the page come with training
    capsys.readouterr()
    assert main(["eval", str(run), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    browser.get((run / "index.html").as_uri())
    images = browser.find_elements(By.TAG_NAME, "img")
    names = sorted(img.get_attribute("alt") for img in images)
    assert names == sorted(["curves", "confusion", "errors", "rollout", "pos_embed", "patch_filters"])
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt)")
    assert broken == []
    shown = browser.find_element(By.ID, "top1")
    assert float(shown.get_attribute("data-value")) == evaluated["test_acc"]
    assert shown.text == f"{evaluated['test_acc']:.2%}"
    rows = browser.find_elements(By.CSS_SELECTOR, "#metrics tr")
    assert len(rows) == 1 + 2  # a header and one row per epoch
    config = json.loads(browser.find_element(By.ID, "config").text)
    assert config["model"] == "vit_nano_patch2_8" and config["epochs"] == 2
