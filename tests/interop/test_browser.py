"""The status page in headless Chromium (scenario_browser.py): 16 mldht nodes in the lab, one
served by `node_app`; the browser sees its id, its routing table and its traffic live, finds
an announced peer with the lookup form, logs no console error (a CSP violation is one), and
fits a phone's width. Screenshots are kept beside the scenario's report."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.network, pytest.mark.lab("browser"),
    pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                       reason="Debian's chromium and chromedriver are needed"),
]
pytest.importorskip("selenium")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_nothing_timed_out(lab_report):
    assert not lab_report.get("timeouts"), lab_report


def test_the_page_shows_the_served_node_id(lab_report):
    assert lab_report["node_id_shown"] == lab_report["served_id"]
    assert lab_report["connection_badge"] == "live"


def test_the_routing_table_is_drawn_as_bars(lab_report):
    assert lab_report["bars"] >= 1
    assert lab_report["nodes_shown"] == lab_report["served_table"] >= 8


def test_the_form_refuses_a_wrong_infohash_with_a_message(lab_report):
    assert lab_report["invalid_flagged"]
    assert "40 hex digits" in lab_report["invalid_message"]


def test_the_lookup_form_finds_the_announced_peer(lab_report):
    assert lab_report["peers_shown"] and lab_report["peer"] in lab_report["peers_shown"]
    assert "Peers" in lab_report["summary"] and "Queried" in lab_report["summary"]
    assert lab_report["lookup_message"].startswith("Done: 1 peer")


def test_the_traffic_numbers_and_chart_update_live(lab_report):
    assert lab_report["datagrams_out_after"] > lab_report["datagrams_out_before"] > 0
    assert lab_report["queries_out_after"] > lab_report["queries_out_before"]
    assert lab_report["traffic_areas"] >= 1


def test_events_arrive_over_server_sent_events(lab_report):
    assert lab_report["events_shown"], lab_report


def test_no_console_errors(lab_report):
    assert lab_report["console_errors"] == [], lab_report["console_errors"]


def test_screenshots_are_non_trivial_pngs(lab_report):
    desktop, phone = Path(lab_report["screenshot"]), Path(lab_report["phone_screenshot"])
    assert desktop.stat().st_size > 20_000 and phone.stat().st_size > 20_000
    width, height = png_size(desktop)
    assert width == 1280 and height >= 800
    width, height = png_size(phone)
    assert width == 375 and height >= 800


def test_no_horizontal_overflow_at_phone_width(lab_report):
    widths = lab_report["phone_widths"]
    assert widths["inner"] == 375
    assert not lab_report["phone_overflow"], widths
    assert widths["chart"] <= widths["inner"]
