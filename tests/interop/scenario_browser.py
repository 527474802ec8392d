"""The status page in a real browser: Debian's headless Chromium, driven by selenium, opens the
page of one mldht node of a small lab network, sees its id, its routing table and its traffic
live, finds an announced peer with the lookup form, and logs no error to its console.

    python tests/interop/scenario_browser.py all [--capture DIR]

Screenshots (desktop and phone width) go to the capture directory (else the lab's workdir).
The nodes, the web server and the browser all run inside the lab namespace: nothing the page
or Chromium does can reach another host.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lab  # noqa: E402

from mldht import InfoHash  # noqa: E402
from mldht.web import WebSettings, node_app, start_server  # noqa: E402

NODES = 16
PORT = 6881
PEER_PORT = 7000
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--disable-dev-shm-usage",
]
WAIT = 20.0  # seconds, for each thing the page must show
DESKTOP = (1280, 1400)
PHONE = (375, 812)
MAX_SCREENSHOT_HEIGHT = 4000
PAGE_AGE_FOR_SCREENSHOT = 14.0  # seconds of traffic history on the chart (7 samples)


def browse(url: str, served_id: str, info_hash: str, peer: str, out: Path, workdir: Path) -> dict:
    """The browser's part (blocking: run in a thread, so the nodes and the server go on)."""
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    report: dict = {}
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-', dir=workdir)}")
    options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(
        executable_path=CHROMEDRIVER, log_output=str(workdir / "chromedriver.log"),
        popen_kw={"preexec_fn": lab._die_with_parent})
    started = time.monotonic()
    driver = webdriver.Chrome(options=options, service=service)
    report["browser_start_seconds"] = round(time.monotonic() - started, 2)
    report["browser_version"] = driver.capabilities.get("browserVersion")

    def wait_for(name: str, condition, timeout: float = WAIT):
        """Wait (bounded) until `condition(driver)` is truthy; its value, or None (and the
        reason in report["timeouts"])."""
        begun = time.monotonic()
        try:
            value = WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
        except TimeoutException:
            report.setdefault("timeouts", []).append(name)
            return None
        report[f"{name}_seconds"] = round(time.monotonic() - begun, 2)
        return value

    def text(element_id: str) -> str:
        return driver.find_element(By.ID, element_id).text

    def number(element_id: str) -> int:
        return int(driver.find_element(By.ID, element_id).get_attribute("data-value") or -1)

    def full_page_screenshot(path: Path, width: int) -> None:
        """The whole page at `width` CSS pixels: the viewport is made as tall as the page (a
        window cannot be made taller than the headless screen)."""
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": min(MAX_SCREENSHOT_HEIGHT, int(height)),
            "deviceScaleFactor": 1, "mobile": False})
        try:
            time.sleep(0.5)  # the charts redraw at the new size
            driver.save_screenshot(str(path))
        finally:
            driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    try:
        driver.set_page_load_timeout(WAIT)
        driver.set_window_size(*DESKTOP)
        driver.get(url)
        loaded = time.monotonic()
        report["title"] = driver.title
        report["node_id_shown"] = wait_for(
            "node_id", lambda d: text("node-id-ipv4") == served_id and text("node-id-ipv4"))
        report["bars"] = wait_for(
            "bars", lambda d: len(d.find_elements(By.CSS_SELECTOR, "#bucket-chart rect.bar")))
        report["nodes_shown"] = number("count-nodes")
        report["connection_badge"] = text("conn")
        report["datagrams_out_before"] = number("datagrams-out")
        report["queries_out_before"] = number("queries-out-total")

        # A wrong infohash is refused by the page itself, with a message.
        field = driver.find_element(By.ID, "lookup-input")
        field.clear()
        field.send_keys("not an infohash")
        driver.find_element(By.ID, "lookup-button").click()
        message = driver.find_element(By.ID, "lookup-message")
        report["invalid_message"] = message.text
        report["invalid_flagged"] = "message-error" in (message.get_attribute("class") or "")

        field.clear()
        field.send_keys(info_hash)
        driver.find_element(By.ID, "lookup-button").click()
        report["peers_shown"] = wait_for("peer", lambda d: peer in [
            li.text for li in d.find_elements(By.CSS_SELECTOR, "#lookup-peers li")] and [
            li.text for li in d.find_elements(By.CSS_SELECTOR, "#lookup-peers li")])
        report["summary"] = wait_for("summary", lambda d: text("lookup-summary").strip())
        report["lookup_message"] = text("lookup-message")

        report["datagrams_out_after"] = wait_for(
            "traffic", lambda d: number("datagrams-out") > report["datagrams_out_before"]
            and number("datagrams-out"))
        report["queries_out_after"] = number("queries-out-total")
        report["traffic_areas"] = wait_for(
            "traffic_areas",
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "#traffic-chart polygon.area")))
        report["events_shown"] = wait_for("events", lambda d: [
            li.text for li in d.find_elements(By.CSS_SELECTOR, "#events li")
            if "lookup finished" in li.text])

        # Some history on the traffic chart for the screenshots (bounded: the page is young).
        time.sleep(max(0.0, PAGE_AGE_FOR_SCREENSHOT - (time.monotonic() - loaded)))
        out.mkdir(parents=True, exist_ok=True)
        desktop = out / "status-page.png"
        full_page_screenshot(desktop, DESKTOP[0])
        report["screenshot"] = str(desktop)

        driver.set_window_size(*PHONE)
        time.sleep(0.5)
        widths = driver.execute_script(
            "return {scroll: document.documentElement.scrollWidth, inner: window.innerWidth,"
            " chart: document.getElementById('bucket-chart').getBoundingClientRect().width}")
        report["phone_widths"] = widths
        report["phone_overflow"] = widths["scroll"] > widths["inner"]
        phone = out / "status-page-phone.png"
        full_page_screenshot(phone, PHONE[0])
        report["phone_screenshot"] = str(phone)

        logs = driver.get_log("browser")
        report["console_entries"] = [f"{entry.get('level')}: {entry.get('message')}"
                                     for entry in logs[:20]]
        report["console_errors"] = [entry["message"] for entry in logs
                                    if entry.get("level") == "SEVERE"]
    finally:
        driver.quit()
    return report


async def scenario_all(the_lab: lab.Lab, capture: Path | None) -> dict:
    report: dict = {}
    out = capture if capture is not None else the_lab.workdir
    nodes = []
    runner = None
    stop = asyncio.Event()
    background = None
    try:
        for i in range(1, NODES + 1):
            nodes.append(await lab.start_mldht(lab.lab_ip(i), PORT))
        served, announcer = nodes[0], nodes[3]
        pings = [a.ping(b.address, timeout=2) for a in nodes for b in nodes if a is not b]
        answers = await asyncio.gather(*pings, return_exceptions=True)
        report["pings_answered"] = sum(not isinstance(a, BaseException) for a in answers)
        info_hash = InfoHash(os.urandom(20))
        announced = await announcer.announce(info_hash, PEER_PORT, timeout=10)
        report["announced_to"] = len(announced.announced_to)
        report["served_table"] = len(served.routing_table)

        settings = WebSettings(host="127.0.0.1", port=0)
        runner = await start_server(node_app(served, settings), settings)
        url = f"http://127.0.0.1:{settings.port}/"
        report["url"] = url

        async def traffic() -> None:
            """While the browser looks: a ping a second to and from the served node, and a
            lookup every few seconds from it and towards it (bounded: at most 90 rounds)."""
            for i in range(90):
                if stop.is_set():
                    return
                other = nodes[1 + i % (NODES - 1)]
                work = [other.ping(served.address, timeout=1), served.ping(other.address, timeout=1)]
                if i % 3 == 1:
                    work.append(other.get_peers(InfoHash(os.urandom(20)), timeout=3).collect())
                if i % 4 == 2:
                    work.append(served.get_peers(InfoHash(os.urandom(20)), timeout=3).collect())
                await asyncio.gather(*work, return_exceptions=True)
                await asyncio.sleep(1.0)
        background = asyncio.create_task(traffic())

        lab.progress(f"serving {url}; starting Chromium")
        peer = f"{lab.lab_ip(4)}:{PEER_PORT}"
        report["served_id"] = served.node_id.hex()
        report["peer"] = peer
        async with asyncio.timeout(80):
            report.update(await asyncio.to_thread(
                browse, url, served.node_id.hex(), info_hash.hex(), peer, out, the_lab.workdir))
        lab.progress("browser done")
    finally:
        stop.set()
        if background is not None:
            await asyncio.gather(background, return_exceptions=True)
        if runner is not None:
            await runner.cleanup()
        await lab.close_all(*nodes)
    return report


if __name__ == "__main__":
    lab.run_scenario_main({"all": scenario_all})
