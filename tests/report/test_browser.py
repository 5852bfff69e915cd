"""report.html in a real browser: headless Chromium loads every image and logs no error.

Needs the ``selenium`` package and Chromium with its driver (Debian: ``chromium`` and
``chromium-driver``); skipped, saying which is missing, where they are absent.
"""

import shutil

import pytest

from attnmtl.report import build_bench_report
from attnmtl.report.figures import figure_png, new_figure

CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
RESULTS = {
    "tasks": {
        "a": {"metric": "accuracy", "higher_is_better": True},
        "b": {"metric": "mae", "higher_is_better": False},
    },
    "single": {"a": {"mean": 0.9, "std": 0.01}, "b": {"mean": 0.5, "std": 0.02}},
    "multi": {
        "equal": {
            "tasks": {"a": {"mean": 0.92, "std": 0.01}, "b": {"mean": 0.55, "std": 0.03}},
            "delta_m": {"mean": -3.89, "std": 1.0},
        }
    },
}


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium driven by chromedriver, logging the console at every level."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    binary = next((path for name in CHROMIUM if (path := shutil.which(name))), None)
    if binary is None:
        pytest.skip(f"no Chromium browser on PATH (looked for {', '.join(CHROMIUM)})")
    driver_path = shutil.which("chromedriver")
    if driver_path is None:
        pytest.skip("chromedriver is not on PATH (Debian package chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=driver_path)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def check_page(driver, path):
    """Open ``path``; assert its images all decoded and the console shows no SEVERE entry."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(path.resolve().as_uri())
    images = driver.execute_script(
        "return Array.from(document.images).map("
        "i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]);"
    )
    assert images, "the page has no image"
    for alt, complete, width, height in images:
        assert complete and width > 0 and height > 0, f"image {alt!r} did not load"
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []
    return images


@pytest.mark.slow
def test_the_run_report_loads_every_image_without_console_errors(browser, tiny_report):
    images = check_page(browser, tiny_report)
    assert len(images) == 5
    assert browser.title == "attnmtl run report: tiny"


@pytest.mark.slow
def test_the_bench_report_loads_every_image_without_console_errors(browser, tmp_path):
    images = check_page(browser, build_bench_report(RESULTS, tmp_path))
    assert [alt for alt, *_ in images] == ["Pareto plot of a and b"]


@pytest.mark.slow
def test_the_check_catches_a_broken_image_and_a_failed_load(browser, tmp_path):
    good = (tmp_path / "good.png").resolve()
    good.write_bytes(figure_png(new_figure(1, 1)))
    broken = tmp_path / "broken.html"
    broken.write_text(
        '<html><body><img alt="x" src="data:image/png;base64,iVBORw0KGgo="></body></html>'
    )
    with pytest.raises(AssertionError, match="image 'x' did not load"):
        check_page(browser, broken)
    missing = tmp_path / "missing.html"
    missing.write_text(
        f'<html><head><link rel="stylesheet" href="nowhere.css"></head>'
        f'<body><img alt="y" src="{good.as_uri()}"></body></html>'
    )
    with pytest.raises(AssertionError, match="SEVERE"):
        check_page(browser, missing)
