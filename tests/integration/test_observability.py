"""Seeing what Hearth does: /metrics moving as jobs go through the real stack, and the live status page
in a real headless browser (Debian's Chromium, driven by selenium)."""

import os
import shutil
import subprocess
import sys
import time

from prometheus_client.parser import text_string_to_metric_families
import pytest
from selenium.common.exceptions import StaleElementReferenceException

from hearth.contract import FAULT_KEY
from tests.conftest import poll_job
from tests.integration.conftest import REPO

pytestmark = pytest.mark.integration

MAIN, BABBLER = "claude-opus-4-6", "claude-haiku-4-5"
ARTIFACTS = REPO / ".cache" / "test-artifacts"


@pytest.fixture(scope="module")
def hearth(private_hearth):
    return private_hearth(HEARTH_FAULT_INJECTION="1")


def scrape(http) -> dict:
    """Every sample of /metrics, parsed by prometheus-client's own parser: (name, labels) -> value."""
    response = http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: dict, name: str, **labels) -> float:
    return sum(value for (sample, have), value in samples.items()
               if sample == name and all(dict(have).get(k) == v for k, v in labels.items()))


def submit(http, request, priority="interactive") -> str:
    return http.post("/v1/jobs", json={"request": request, "priority": priority}).json()["id"]


def test_the_counters_move_as_jobs_hit_miss_get_cancelled_and_fail(hearth, http):
    before = scrape(http)
    system = "You are a careful assistant who answers briefly. " * 30
    first = {"model": MAIN, "max_tokens": 8, "system": system, "messages": [{"role": "user", "content": "hi"}]}
    assert poll_job(http, submit(http, first))["status"] == "finished"  # a miss
    again = dict(first, messages=[{"role": "user", "content": "and again"}])
    assert poll_job(http, submit(http, again))["status"] == "finished"  # a hit: the system prompt is cached
    long = submit(http, {"model": BABBLER, "max_tokens": 100_000, "messages": [{"role": "user", "content": "go"}]})
    while http.get(f"/v1/jobs/{long}").json().get("progress", {}).get("output_tokens", 0) == 0:
        time.sleep(0.05)  # its first token is out: three first tokens to count
    http.delete(f"/v1/jobs/{long}")
    assert poll_job(http, long)["status"] == "cancelled"
    hearth.redis.set(FAULT_KEY, "memory-error")
    failing = submit(http, {"model": MAIN, "max_tokens": 20, "messages": [{"role": "user", "content": "x"}]})
    assert poll_job(http, failing)["status"] == "failed"
    time.sleep(0.5)  # the worker sends its last counts when it goes idle
    after = scrape(http)

    def moved(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved("hearth_jobs_total", outcome="finished", queue="interactive") == 2
    assert moved("hearth_jobs_total", outcome="cancelled") == 1
    assert moved("hearth_jobs_total", outcome="failed") == 1
    assert moved("hearth_prompt_tokens_total", source="cached") > 300  # the second reused the system prompt
    assert moved("hearth_prompt_tokens_total", source="prefilled") > 300
    assert moved("hearth_generation_tokens_total") >= 16
    assert moved("hearth_time_to_first_token_seconds_count", queue="interactive") >= 3
    assert moved("hearth_time_per_output_token_seconds_count") > 0
    assert moved("hearth_queue_wait_seconds_count") == 4
    assert total(after, "hearth_workers") == 1 and total(after, "hearth_cache_budget_bytes") > 0
    for name in ("hearth_queue_depth", "hearth_queue_oldest_age_seconds", "hearth_jobs_running",
                 "hearth_jobs_suspended", "hearth_cache_bytes", "hearth_cache_evicted_blocks_total"):
        assert any(sample == name for sample, _ in after), name


def test_hearth_status_prints_the_same_summary_in_a_terminal(hearth):
    done = subprocess.run([sys.executable, "-m", "hearth.cli", "status"], env=dict(os.environ, **hearth.env),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "queues: interactive" in done.stdout and "worker " in done.stdout and "recent jobs:" in done.stdout


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.fail("the status page test needs chromium and chromium-driver (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1100,1300"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def wait_for(driver, condition, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except StaleElementReferenceException:
            pass  # the page re-rendered the row being read: read it again
        time.sleep(0.2)
    raise AssertionError(f"the page never showed {what}:\n{driver.find_element('tag name', 'body').text}")


def test_the_status_page_shows_a_running_job_then_its_outcome_without_a_reload(hearth, http):
    driver = browser()
    try:
        driver.get(hearth.base_url + "/")  # redirects to /status
        assert driver.current_url.endswith("/status")
        driver.execute_script("window.loadedOnce = true")
        text = lambda: driver.find_element("tag name", "body").text  # noqa: E731
        wait_for(driver, lambda: "worker " in text(), "the worker")
        job = submit(http, {"model": BABBLER, "max_tokens": 100_000, "messages": [{"role": "user", "content": "go"}]},
                     priority="background")
        short = job[:12]
        wait_for(driver, lambda: any(short in row.text and "decoding" in row.text
                                     for row in driver.find_elements("css selector", "#workers tr")),
                 "the job decoding")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "status-page-running.png"))
        http.delete(f"/v1/jobs/{job}")
        wait_for(driver, lambda: any(short in row.text and "cancelled" in row.text
                                     for row in driver.find_elements("css selector", "#recent tr")),
                 "the job's outcome")
        assert driver.execute_script("return window.loadedOnce") is True, "the page reloaded"
        assert "tokens/s over the last minute" in text()
        driver.save_screenshot(str(ARTIFACTS / "status-page.png"))
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == [], errors
    finally:
        driver.quit()


def test_the_status_page_leaves_prompts_out_unless_asked(hearth, http):
    secret = "my secret prompt words"
    poll_job(http, submit(http, {"model": MAIN, "max_tokens": 4, "messages": [{"role": "user", "content": secret}]}))
    assert secret not in http.get("/status/snapshot").text
    assert secret in http.get("/status/snapshot?prompts=1").text
