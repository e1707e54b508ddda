"""The web console in a real browser: Debian's chromium through chromium-driver (Selenium).

One pair of sites (prod protecting group ``app`` to dr) and one headless browser for the
whole module, at 1280x800; the cases run in order, as one operator's session would. The
browser's log is read after every page and must hold no Content-Security-Policy
violation (nor any other error). Forged requests go by httpx with the browser's cookie.

The second part (file-restore browser, users and tokens, agents, sites, tasks, reports)
reads an ext4 file system written into the group's volume at the recovery site dr.

With ``SEAWALL_UI_SCREENSHOTS=1`` the run saves a screenshot of each main page into
``docs/ui/`` (the README shows them); otherwise it writes nothing into the repository.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import random
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from seawall.errors import InvalidInput
from seawall.localsites import LocalSite
from seawall.nbd.blocking import NbdClient
from support.cli import run_json
from support.groups import GROUP, protect, tag
from support.sites import running_pair

pytestmark = pytest.mark.e2e

CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "ui"
PASSWORD = "a console password"
WAIT_S = 15.0
VOLUME_BYTES = 8 << 20  # room for a small ext4 file system (the file browser's case)
ODD_NAME = "a&b?c=#%2F <x>.txt"  # a name from the disk that must survive URLs and pages

if not (CHROMEDRIVER.exists() and CHROMIUM.exists()):
    pytest.skip("needs Debian's chromium and chromium-driver (make debs)",
                allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip '.[dev]')")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.expected_conditions import staleness_of  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalSite, LocalSite]]:
    base = tmp_path_factory.mktemp("console")
    log = (base / "sites.log").open("w")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SEAWALL_MONITOR_INTERVAL_S", "0.5")  # alerts within a second
        prod, dr = LocalSite("prod", base / "prod", log), LocalSite("dr", base / "dr", log)
        with running_pair(prod, dr):
            protect(prod, dr, bytearray(VOLUME_BYTES), count=4)
            for name, role in (("alice", "admin"), ("victor", "viewer")):
                prod.api.post("/api/v1/users", {"name": name, "role": role,
                                                "password": PASSWORD})
            yield prod, dr
    log.close()


def spki_sha256(cert_pem: str) -> str:
    """Chromium's pin of a certificate: base64 of the SHA-256 of its public key (SPKI)."""
    key = x509.load_pem_x509_certificate(cert_pem.encode()).public_key()
    spki = key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def browser(sites: tuple[LocalSite, LocalSite],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # The sites' own certificates are trusted by their keys, as the CLI pins them; any
    # other certificate still fails (Chromium takes the list only with a user data dir).
    pins = ",".join(spki_sha256(site.cert_pem) for site in sites)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1280,800", f"--ignore-certificate-errors-spki-list={pins}",
                     f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver's path given: Selenium Manager does not run, nothing is downloaded.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def page(browser: Any, sites: tuple[LocalSite, LocalSite]) -> Callable[[str], None]:
    prod, _ = sites

    def go(path: str) -> None:
        browser.get(prod.url + path)
        check_log(browser)
    return go


def check_log(browser: Any) -> None:
    """No CSP violation, no script error, no failed script, style or fragment in the
    browser's console (its log is consumed). A page's own refusal (a 401 login page, a 400
    form) is logged as a failed load too: the cases check those pages themselves."""
    problems = [entry["message"] for entry in browser.get_log("browser")
                if entry["level"] in ("SEVERE", "WARNING") and not (
                    "Failed to load resource" in entry["message"]
                    and not re.search(r"/(static|fragments)/", entry["message"]))]
    assert problems == [], problems


def screenshot(browser: Any, name: str) -> None:
    """The whole page (up to 2000 px high), 1280 px wide, into ``docs/ui/NAME.png``."""
    if os.environ.get("SEAWALL_UI_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1280, min(2000, height + 150))
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
        browser.set_window_size(1280, 800)


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            value = condition()
        except StaleElementReferenceException:  # htmx swapped the element under us
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {WAIT_S} s")


def submit(browser: Any, selector: str) -> None:
    """Click a form's button and wait for the answer's page to replace this one."""
    old = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.CSS_SELECTOR, selector).click()
    WebDriverWait(browser, WAIT_S).until(staleness_of(old))
    loaded(browser)
    check_log(browser)


def loaded(browser: Any) -> None:
    """Until the page in the window finished loading (the old one gone is not enough: the
    new one may still be parsing, and its elements then change under a find)."""
    WebDriverWait(browser, WAIT_S).until(
        lambda driver: driver.execute_script("return document.readyState") == "complete")


def login(browser: Any, page: Callable[[str], None], user: str, password: str) -> None:
    """With the keyboard only: the user field has the focus, Tab, Enter (``page`` goes to
    a path of the site to log in to)."""
    page("/login")
    old = browser.find_element(By.TAG_NAME, "html")
    assert browser.switch_to.active_element.get_attribute("id") == "user"
    browser.switch_to.active_element.send_keys(user, Keys.TAB, password, Keys.ENTER)
    WebDriverWait(browser, WAIT_S).until(staleness_of(old))
    loaded(browser)  # the login's redirect done: a page asked for next is not overtaken
    check_log(browser)


def session(browser: Any, site: LocalSite) -> httpx.Client:
    """An HTTP client holding the browser's cookies for ``site``."""
    client = httpx.Client(base_url=site.url, follow_redirects=False, timeout=30,
                          verify=site.tls)
    for cookie in browser.get_cookies():
        client.cookies.set(cookie["name"], cookie["value"])
    return client


def csrf_of(browser: Any) -> str:
    token: str = browser.find_element(By.NAME, "csrf_token").get_attribute("value")
    return token


def test_login_refuses_a_wrong_password(browser: Any, page: Callable[[str], None]) -> None:
    page("/")  # not signed in: sent to the login page
    assert browser.current_url.endswith("/login")
    screenshot(browser, "login")
    login(browser, page, "alice", "not the password")
    assert browser.find_element(By.ID, "login-error").text == "wrong user name or password"


def test_dashboard_shows_the_group_and_refreshes_live(
    browser: Any, page: Callable[[str], None], sites: tuple[LocalSite, LocalSite],
) -> None:
    login(browser, page, "alice", PASSWORD)
    assert browser.current_url.rstrip("/") == sites[0].url.rstrip("/")
    assert browser.find_element(By.ID, "whoami").text == "alice (admin)"
    row = browser.find_element(By.ID, f"group-{GROUP}")
    assert "protecting" in row.find_element(By.CLASS_NAME, "state").text
    rpo = row.find_element(By.CLASS_NAME, "rpo")
    assert float(rpo.get_attribute("data-rpo-s")) < 5.0  # 0.5 s checkpoints
    assert "rpo-ok" in rpo.get_attribute("class").split()
    screenshot(browser, "dashboard")
    browser.execute_script("window.seawallTestMarker = 42")  # gone if the page reloads
    first = browser.find_element(By.ID, "updated-at").text
    wait_for(lambda: browser.find_element(By.ID, "updated-at").text != first,
             "refresh of the dashboard")
    assert browser.execute_script("return window.seawallTestMarker") == 42
    check_log(browser)
    browser.set_window_size(420, 800)  # a narrow window: the page does not overflow it
    try:
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth")
    finally:
        browser.set_window_size(1280, 800)


def test_settings_are_edited_with_the_api_validation(
    browser: Any, page: Callable[[str], None], sites: tuple[LocalSite, LocalSite],
) -> None:
    prod, dr = sites
    page(f"/groups/{GROUP}")
    field = browser.find_element(By.ID, "setting-rpo_alert")
    assert field.get_attribute("value") == "5m"
    field.clear()
    field.send_keys("2m")
    submit(browser, "#settings-form button")
    assert browser.find_element(By.ID, "notice").text == "changed: rpo_alert_s 300.0 -> 120.0"
    for site in (prod, dr):  # applied at both sites, as by the API
        assert site.api.get(f"/api/v1/groups/{GROUP}/settings")["settings"]["rpo_alert_s"] == 120

    field = browser.find_element(By.ID, "setting-history")
    field.clear()
    field.send_keys("10m")
    submit(browser, "#settings-form button")
    with pytest.raises(InvalidInput) as refused:
        prod.api.request("PATCH", f"/api/v1/groups/{GROUP}/settings",
                         json={"history_s": 600})
    assert browser.find_element(By.ID, "error-message").text == refused.value.message
    assert browser.find_element(By.ID, "setting-history").get_attribute("value") == "10m"
    assert prod.api.get(f"/api/v1/groups/{GROUP}/settings")["settings"]["history_s"] == 86400


def test_tag_a_checkpoint(browser: Any, page: Callable[[str], None],
                          sites: tuple[LocalSite, LocalSite]) -> None:
    page(f"/groups/{GROUP}")
    browser.find_element(By.ID, "tag-name").send_keys("before-upgrade")
    submit(browser, "#tag-form button")
    notice = browser.find_element(By.ID, "notice").text
    checkpoint_id = re.fullmatch(r"checkpoint (\d+) tagged 'before-upgrade'", notice)
    assert checkpoint_id, notice
    page(f"/groups/{GROUP}")
    mark = browser.find_element(By.CSS_SELECTOR,
                                f"li[data-checkpoint-id='{checkpoint_id.group(1)}']")
    assert "mark-tagged" in mark.get_attribute("class").split()
    assert mark.find_element(By.CLASS_NAME, "name").text == "before-upgrade"
    assert browser.find_elements(By.CSS_SELECTOR, ".timeline li.mark-periodic")
    screenshot(browser, "group")


def test_history_charts_draw_the_monitors_samples(
    browser: Any, page: Callable[[str], None], sites: tuple[LocalSite, LocalSite],
) -> None:
    prod, _ = sites
    with httpx.Client(base_url=prod.url, timeout=30, verify=prod.tls) as anonymous:
        token = anonymous.post("/api/v1/login", json={"user": "victor",
                                                      "password": PASSWORD}).json()["token"]
    with httpx.Client(base_url=prod.url, timeout=30, verify=prod.tls,  # a viewer's token
                      headers={"Authorization": f"Bearer {token}"}) as viewer:
        def points() -> list[dict[str, Any]]:
            answer = viewer.get(f"/api/v1/groups/{GROUP}/history", params={"range": "1h"})
            assert answer.status_code == 200, answer.text
            assert answer.json()["resolution_s"] == 5
            found: list[dict[str, Any]] = answer.json()["points"]
            return found if len(found) >= 2 and found[-1]["rpo_s"] is not None else []
        sampled = wait_for(points, "two 5 s points of history, the newest with an RPO")
        assert sampled[-1]["rpo_s"] < 5.0 and sampled[-1]["t"] % 5 == 0  # 0.5 s checkpoints
        assert viewer.get(f"/api/v1/groups/{GROUP}/history",
                          params={"range": "2y"}).status_code == 422
    day = run_json(prod, "group", "history", GROUP, "--range", "24h")  # the CLI's view
    assert day["resolution_s"] == 60 and day["points"][-1]["rpo_s"] is not None
    page(f"/groups/{GROUP}")
    charts = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".chart[data-points]"),
                      "charts drawn")
    assert len(charts) == 2
    for chart in charts:
        assert int(chart.get_attribute("data-points")) >= 2
        assert chart.find_element(By.TAG_NAME, "canvas").size["width"] > 200
    assert browser.find_element(By.ID, "gauge-history").tag_name == "meter"
    browser.find_element(By.CSS_SELECTOR, "button[data-range='24h']").click()
    wait_for(lambda: "over 24h" in browser.find_element(
        By.CSS_SELECTOR, "[data-history-status]").text, "the 24 h range")
    check_log(browser)  # uPlot under the CSP: no violation


def test_failover_test_from_the_wizard(browser: Any, sites: tuple[LocalSite, LocalSite]) -> None:
    """At dr, an operator picks the tagged checkpoint, confirms, sees the images, stops the
    test as passed with notes, and reads the report in the console."""
    _, dr = sites
    dr.api.post("/api/v1/users", {"name": "oscar", "role": "operator", "password": PASSWORD})
    tagged = [c for c in dr.api.get(f"/api/v1/groups/{GROUP}/checkpoints")
              if c.get("name") == "before-upgrade"]
    assert tagged, "the tag of test_tag_a_checkpoint reached dr"
    browser.get(dr.url + "/login")
    old = browser.find_element(By.TAG_NAME, "html")
    browser.switch_to.active_element.send_keys("oscar", Keys.TAB, PASSWORD, Keys.ENTER)
    WebDriverWait(browser, WAIT_S).until(staleness_of(old))
    browser.get(dr.url + f"/groups/{GROUP}")
    wait_for(lambda: browser.find_elements(By.ID, "failover-at"), "wizard")[0].send_keys(
        "yesterday")
    submit(browser, "#failover-form button")  # bad input: the reason, nothing started
    assert browser.find_element(By.ID, "error-message").text == (
        "time must be like 2026-12-08T01:30:00Z, not 'yesterday'")
    assert browser.find_elements(By.ID, "confirm-form") == []
    browser.back()
    choice = wait_for(lambda: browser.find_elements(By.ID, "failover-checkpoint"), "wizard")[0]
    option = choice.find_element(By.CSS_SELECTOR, f"option[value='{tagged[0]['id']}']")
    assert "tagged · before-upgrade" in option.text
    option.click()
    check_log(browser)
    submit(browser, "#failover-form button")
    assert f"#{tagged[0]['id']}" in browser.find_element(By.ID, "failover-choice").text
    submit(browser, "#confirm-start")
    wait_for(lambda: any("running" in e.text for e in
                         browser.find_elements(By.ID, "failover-state")), "running test")
    running = dr.api.get(f"/api/v1/failover/{GROUP}")["operation"]
    assert running["checkpoint"]["id"] == tagged[0]["id"] and running["user"] == "oscar"
    images = browser.find_elements(By.CSS_SELECTOR, "#failover-images tbody tr")
    assert [row.find_element(By.TAG_NAME, "code").text for row in images] == [
        image["uri"] for image in running["images"]]
    steps = browser.find_element(By.CSS_SELECTOR, "ol.steps").text
    assert "checkpoint chosen" in steps and "every volume readable" in steps
    screenshot(browser, "failover-test")
    browser.find_element(By.ID, "result-pass").click()
    browser.find_element(By.ID, "stop-notes").send_keys("app answered on port 443")
    submit(browser, "#stop-form button")
    report = browser.find_element(By.ID, "report")
    assert f"Recovery report {running['id']}" in report.text
    assert "app answered on port 443" in report.text and "before-upgrade" in report.text
    screenshot(browser, "report")
    stored = dr.api.get(f"/api/v1/reports/{running['id']}")
    assert (stored["state"], stored["result"], stored["user"]) == ("stopped", "pass", "oscar")
    assert dr.api.get(f"/api/v1/failover/{GROUP}")["operation"] is None
    submit(browser, ".who button")  # log out at dr: the browser keeps prod's session only


def test_forms_need_this_sessions_csrf_token(
    browser: Any, page: Callable[[str], None], sites: tuple[LocalSite, LocalSite],
) -> None:
    prod, _ = sites
    page("/")
    with session(browser, prod) as client:
        tagged = {"name": "forged"}
        missing = client.post(f"/groups/{GROUP}/checkpoints", data=tagged)
        assert missing.status_code == 403
        assert "CSRF token is missing" in missing.text
        other = client.post(f"/groups/{GROUP}/checkpoints", data={
            **tagged, "csrf_token": "another-sessions-token"})
        assert other.status_code == 403
        started = client.post(f"/groups/{GROUP}/failover-test", data={"checkpoint": "latest"})
        assert started.status_code == 403 and "CSRF token is missing" in started.text
        from_elsewhere = client.post(f"/groups/{GROUP}/checkpoints", data={
            **tagged, "csrf_token": csrf_of(browser)}, headers={"Origin": "https://evil.example"})
        assert from_elsewhere.status_code == 403
    names = [c.get("name") for c in prod.api.get(f"/api/v1/groups/{GROUP}/checkpoints")]
    assert "forged" not in names


def test_alerts_are_acknowledged(browser: Any, page: Callable[[str], None],
                                 sites: tuple[LocalSite, LocalSite]) -> None:
    prod, _ = sites
    # Checkpoints every minute against an RPO alert at 1 s: the alert is up within seconds.
    prod.api.request("PATCH", f"/api/v1/groups/{GROUP}/settings",
                     json={"checkpoint_interval_s": 60, "rpo_alert_s": 1})
    wait_for(lambda: prod.api.get("/api/v1/alerts"), "RPO alert")
    page("/alerts")
    screenshot(browser, "alerts")
    button = browser.find_element(By.CSS_SELECTOR, "table.alerts form button")
    alert_id = button.get_attribute("aria-label").removeprefix("Acknowledge ")
    submit(browser, "table.alerts form button")
    assert browser.find_element(By.ID, "notice").text == f"{alert_id} acknowledged"
    acknowledged = [a for a in prod.api.get("/api/v1/alerts") if a["id"] == alert_id]
    assert acknowledged[0]["acknowledged_by"] == "alice"
    prod.api.request("PATCH", f"/api/v1/groups/{GROUP}/settings",
                     json={"checkpoint_interval_s": 0.5, "rpo_alert_s": 300})


def test_logout_ends_the_session(browser: Any, page: Callable[[str], None],
                                 sites: tuple[LocalSite, LocalSite]) -> None:
    prod, dr = sites
    page("/events")
    assert browser.find_element(By.CSS_SELECTOR, "table.events tbody tr td").text
    old = session(browser, prod)
    submit(browser, ".who button")
    assert browser.current_url.endswith("/login")
    with old:
        assert old.get("/").headers["location"] == "/login"  # the old cookie: to login
        assert old.get(f"/groups/{GROUP}").status_code == 303
    # A session of the other site (same host, so the browser would send it here too):
    # under its own name it is ignored, under this site's name it is unknown: to login.
    dr.api.post("/api/v1/users", {"name": "alice", "role": "admin", "password": PASSWORD})
    with httpx.Client(base_url=dr.url, follow_redirects=False, verify=dr.tls) as at_dr:
        answer = at_dr.post("/login", data={"user": "alice", "password": PASSWORD})
    (dr_name, dr_value), = answer.cookies.items()
    (prod_name, _), = old.cookies.items()
    assert dr_name != prod_name
    with httpx.Client(base_url=dr.url, cookies={dr_name: dr_value}, verify=dr.tls) as at_dr:
        dashboard = at_dr.get("/")  # a live session, at dr: the recovery side's pages
        assert dashboard.status_code == 200 and "receiving" in dashboard.text
        group = at_dr.get(f"/groups/{GROUP}")
        assert group.status_code == 200 and 'id="settings-form"' not in group.text
    for cookies in ({dr_name: dr_value}, {prod_name: dr_value}):
        with httpx.Client(base_url=prod.url, cookies=cookies, verify=prod.tls) as other:
            assert other.get("/").headers["location"] == "/login"


def test_viewer_sees_no_operations_and_is_refused_them(
    browser: Any, page: Callable[[str], None], sites: tuple[LocalSite, LocalSite],
) -> None:
    prod, _ = sites
    login(browser, page, "victor", PASSWORD)
    assert browser.find_element(By.ID, "whoami").text == "victor (viewer)"
    page(f"/groups/{GROUP}")
    assert browser.find_elements(By.ID, "settings-form") == []
    assert browser.find_elements(By.ID, "tag-form") == []
    assert browser.find_element(By.ID, "setting-rpo_alert").text == "5m"  # read-only
    page("/alerts")
    assert browser.find_elements(By.CSS_SELECTOR, "table.alerts form") == []
    with session(browser, prod) as client:  # a forged POST with a valid token
        forged = client.post(f"/groups/{GROUP}/checkpoints", data={
            "name": "by-viewer", "csrf_token": csrf_of(browser)})
        assert forged.status_code == 403
        assert "user victor (viewer) may not POST" in forged.text
        settings = client.post(f"/groups/{GROUP}/settings", data={
            "history": "48h", "csrf_token": csrf_of(browser)})
        assert settings.status_code == 403
        test = client.post(f"/groups/{GROUP}/failover-test", data={
            "checkpoint": "latest", "csrf_token": csrf_of(browser)})
        assert test.status_code == 403 and "may not POST /api/v1/failover/{group}/test" in test.text
    names = [c.get("name") for c in prod.api.get(f"/api/v1/groups/{GROUP}/checkpoints")]
    assert "by-viewer" not in names
    assert prod.api.get(f"/api/v1/groups/{GROUP}/settings")["settings"]["history_s"] == 86400
    events = prod.api.get("/api/v1/events", limit=5)
    refused = [e for e in events if e["user"] == "victor" and e["status_code"] == 403]
    assert refused, events  # the event log names who was refused


def logout(browser: Any, page: Callable[[str], None]) -> None:
    page("/events")  # a page that does not refresh itself under the click
    submit(browser, ".who button")


def at(browser: Any, site: LocalSite) -> Callable[[str], None]:
    """Like the ``page`` fixture, for another site."""
    def go(path: str) -> None:
        browser.get(site.url + path)
        check_log(browser)
    return go


def click(browser: Any, selector: str, by: str = By.CSS_SELECTOR) -> None:
    """Follow a link and wait for its page."""
    old = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(by, selector).click()
    WebDriverWait(browser, WAIT_S).until(staleness_of(old))
    check_log(browser)


@pytest.mark.skipif(shutil.which("mke2fs") is None, reason="needs e2fsprogs (make debs)")
def test_files_are_restored_through_the_browser(
    browser: Any, sites: tuple[LocalSite, LocalSite], tmp_path: Path,
) -> None:
    """An ext4 file system written into the volume, tagged; at dr an operator browses to a
    file at the latest tagged checkpoint and downloads it (the browser's own download), a
    file with an odd name, and a directory as an archive: the bytes are those written."""
    prod, dr = sites
    rng = random.Random(16)
    config = b"threads = 16\n" + rng.randbytes(200_000)  # several blocks, not text only
    odd = b"untrusted name\n"
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "app.conf").write_bytes(config)
    (tree / "data").mkdir()
    (tree / "data" / ODD_NAME).write_bytes(odd)
    (tree / "data" / "notes.txt").write_bytes(b"notes\n")
    image_path = tmp_path / "fs.img"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(tree), str(image_path),
                    f"{VOLUME_BYTES >> 10}k"], check=True, capture_output=True)
    image = image_path.read_bytes()
    uri = next(v["nbd_uri"] for v in prod.api.get("/api/v1/volumes") if v["name"] == "disk0")
    with NbdClient(uri) as client:
        for offset in range(0, len(image), 1 << 20):
            client.write(offset, image[offset : offset + (1 << 20)])
        client.flush()
    checkpoint = tag(prod, dr, "files-ready")
    dr.api.post("/api/v1/users", {"name": "olga", "role": "operator", "password": PASSWORD})
    go = at(browser, dr)
    login(browser, go, "olga", PASSWORD)

    go("/files")
    click(browser, "#file-volumes a.volume")
    Select(browser.find_element(By.ID, "checkpoint")).select_by_value("latest-tagged")
    submit(browser, "#checkpoint-form button")
    source = browser.find_element(By.ID, "file-checkpoint").text
    assert source.startswith(f"#{checkpoint} ") and "files-ready" in source
    click(browser, "etc/", By.LINK_TEXT)
    screenshot(browser, "files")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Page.setDownloadBehavior",
                            {"behavior": "allow", "downloadPath": str(downloads)})
    browser.find_element(By.CSS_SELECTOR, "a[aria-label='Download app.conf']").click()
    done = downloads / "app.conf"
    wait_for(lambda: done.exists() and not list(downloads.glob("*.crdownload")),
             "downloaded app.conf")
    assert done.read_bytes() == config

    click(browser, "#crumbs a")  # back to / at the same checkpoint
    click(browser, "data/", By.LINK_TEXT)
    row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "#files tbody tr")
               if r.find_element(By.TAG_NAME, "th").text == ODD_NAME)  # escaped, as it is
    odd_link = row.find_element(By.CSS_SELECTOR, "a.download").get_attribute("href")
    with session(browser, dr) as client:
        answer = client.get(odd_link)
        assert answer.status_code == 200 and answer.content == odd
        assert answer.headers["content-type"] == "application/octet-stream"
        assert answer.headers["content-disposition"].startswith('attachment; filename="a_b_c')
        archive = client.get(browser.find_element(By.ID, "here-archive").get_attribute("href"))
        assert archive.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
            member = tar.extractfile(f"data/{ODD_NAME}")
            assert member is not None and member.read() == odd
    assert not dr.api.get("/api/v1/exports")  # every export of the browser released


def test_reports_are_shown_inside_the_console(
    browser: Any, sites: tuple[LocalSite, LocalSite],
) -> None:
    """A failover test (through the API) ends with a report; the console lists it and shows
    its page inside, in a frame under its own policy (no CSP violation in the log)."""
    _, dr = sites
    dr.api.post(f"/api/v1/failover/{GROUP}/test", {"checkpoint": "latest-tagged"})
    report = dr.api.post(f"/api/v1/failover/{GROUP}/stop",
                         {"result": "pass", "notes": "<b>boots</b>"})
    go = at(browser, dr)
    go("/tasks")
    task = browser.find_element(By.CSS_SELECTOR, "#tasks tbody tr")
    assert "failover-test" in task.text and "stopped" in task.text
    screenshot(browser, "tasks")
    go("/reports")
    click(browser, report["id"], By.LINK_TEXT)
    frame = browser.find_element(By.ID, "report-frame")
    screenshot(browser, "report")
    browser.switch_to.frame(frame)
    try:
        assert f"Failover test of group {GROUP}" in browser.find_element(By.TAG_NAME, "h1").text
        assert "<b>boots</b>" in browser.find_element(By.TAG_NAME, "body").text  # as text
    finally:
        browser.switch_to.default_content()
    check_log(browser)


def test_admin_makes_a_viewer_and_a_token(
    browser: Any, page: Callable[[str], None], sites: tuple[LocalSite, LocalSite],
) -> None:
    prod, _ = sites
    logout(browser, page)  # victor's session, from the viewer's case
    login(browser, page, "alice", PASSWORD)
    page("/users")
    browser.find_element(By.ID, "new-user-name").send_keys("wendy")
    Select(browser.find_element(By.ID, "new-user-role")).select_by_value("viewer")
    browser.find_element(By.ID, "new-user-password").send_keys(PASSWORD)
    submit(browser, "#user-form button")
    assert browser.find_element(By.ID, "notice").text == "user wendy created (viewer)"
    browser.find_element(By.ID, "token-name").send_keys("ci")
    submit(browser, "#token-form button")
    token = browser.find_element(By.ID, "new-token").get_attribute("value")
    with httpx.Client(base_url=prod.url, timeout=30, verify=prod.tls) as api:
        me = api.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["user"] == "alice"
    screenshot(browser, "users")
    page("/users")
    assert browser.find_elements(By.ID, "new-token") == []  # shown once only
    with session(browser, prod) as client:  # a forged POST without the CSRF token
        forged = client.post("/users", data={"name": "mallory", "role": "admin",
                                              "password": PASSWORD})
        assert forged.status_code == 403 and "CSRF token is missing" in forged.text
    assert "mallory" not in [u["name"] for u in prod.api.get("/api/v1/users")]
    for path, form, name in (("/agents", "join-form", "agents"),
                             ("/pairing", "pair-form", "sites")):
        page(path)
        assert browser.find_elements(By.ID, form)
        screenshot(browser, name)
    assert "yes" in browser.find_element(By.ID, "peer-dr").text  # reachable

    logout(browser, page)
    login(browser, page, "wendy", PASSWORD)
    assert browser.find_element(By.ID, "whoami").text == "wendy (viewer)"
    for path, absent in (("/users", ("user-form", "users")), ("/agents", ("join-form",)),
                         ("/pairing", ("pair-form", "pairing-token-form")),
                         (f"/groups/{GROUP}", ("tag-form", "settings-form"))):
        page(path)
        for element in absent:
            assert browser.find_elements(By.ID, element) == [], (path, element)
    assert browser.find_elements(By.LINK_TEXT, "Restore files") == []
    page("/files")
    assert "may not GET /api/v1/files" in browser.find_element(By.TAG_NAME, "main").text
