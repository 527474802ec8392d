"""BEP 44 and BEP 33 against libtorrent 2.1.1 and WebTorrent's bittorrent-dht 11, in the lab
namespace (scenario_extensions.py, about 10 s): items put by each implementation are read
by the others, stale and racing puts are refused with 302 and 301 everywhere, and
libtorrent's scrape filters are bit for bit mldht's.

Needs Node.js and `npm ci --prefix tests/interop/js` (a missing install FAILS the tests).
"""

from __future__ import annotations

import pytest

import lab
import webtorrent

pytestmark = [pytest.mark.network, pytest.mark.lab("extensions")]

LT = f"{lab.lab_ip(20)}:6881"
WT = f"{lab.lab_ip(21)}:6881"


@pytest.fixture(scope="module")
def report(lab_runs) -> dict:
    try:
        webtorrent.check_installed()
    except webtorrent.WebTorrentMissing as exc:
        return lab_runs.outcome("extensions", str(exc))
    return lab_runs.outcome("extensions")


def _step(report: dict, name: str) -> dict:
    step = lab.checked(report)[name]
    assert "error" not in step, step["error"]
    return step


def test_the_network_formed(report):
    report = lab.checked(report)
    assert report["lt_joined_seconds"] is not None and report["wt_ready"]
    assert min(report["mldht_tables"]) >= 6  # the 6 other mldht nodes at least
    assert report["mldht_receive_failures"] == 0 and report["bans"] == []


def test_mldht_items_are_read_by_libtorrent_and_webtorrent(report):
    step = _step(report, "bep44_from_mldht")
    put = step["put_immutable"]
    assert len(put["stored_on"]) == put["asked"] == 8 and put["errors"] == {}
    # 9 nodes: the writer's k = 8 closest are all the others, libtorrent and WebTorrent too.
    assert LT in put["stored_on"] and WT in put["stored_on"]
    assert step["lt_get_immutable"] == {"value": "immutable from mldht"}
    assert step["wt_get_immutable"]["found"] and step["wt_get_immutable"]["value"] == "immutable from mldht"
    first, second = step["put_mutable"]
    assert (first["seq"], second["seq"]) == (1, 2)  # the second put found seq 1
    assert len(second["stored_on"]) == 8 and LT in second["stored_on"] and WT in second["stored_on"]
    assert step["lt_get_mutable"] == {"value": "mutable from mldht 2", "seq": 2, "salt": "lab"}
    wt_get = step["wt_get_mutable"]
    assert wt_get["found"] and wt_get["value"] == "mutable from mldht 2" and wt_get["seq"] == 2


def test_stale_and_racing_puts_are_refused_by_every_implementation(report):
    step = _step(report, "bep44_from_mldht")
    # The 8 nodes holding seq 2 (libtorrent and WebTorrent among them) refuse seq 1 with
    # 302 and a cas of 1 with 301; the item stays at seq 2.
    assert step["put_stale"]["stored_on"] == [] and step["put_stale"]["errors"] == {"302": 8}
    assert step["put_cas_mismatch"]["stored_on"] == [] and step["put_cas_mismatch"]["errors"] == {"301": 8}
    assert step["mldht_get_mutable"]["value"] == "mutable from mldht 2"
    assert step["mldht_get_mutable"]["seq"] == 2 and step["mldht_get_mutable"]["invalid"] == 0


def test_libtorrent_items_are_stored_and_read_by_mldht(report):
    step = _step(report, "bep44_from_libtorrent")
    assert step["lt_put_immutable"]["num_success"] >= 6
    assert step["stored_by_mldht_nodes"] >= 5
    assert step["mldht_get_immutable"]["value"] == "immutable from libtorrent"
    assert step["lt_put_mutable"] == {"seq": 1, "num_success": step["lt_put_mutable"]["num_success"]}
    assert step["lt_put_mutable"]["num_success"] >= 6 and step["mutable_stored_by_mldht_nodes"] >= 5
    got = step["mldht_get_mutable"]
    assert got["found"] and got["value"] == "mutable from libtorrent" and got["seq"] == 1
    assert got["invalid"] == 0 and got["copies"] >= 5
    cli = step["cli_get_mutable"]
    assert cli["exit"] == 0 and cli["stdout"] == "mutable from libtorrent\n", cli


def test_webtorrent_items_are_stored_and_read_by_mldht(report):
    step = _step(report, "bep44_from_webtorrent")
    assert step["wt_put_immutable"]["nodes"] >= 6 and step["stored_by_mldht_nodes"] >= 5
    assert step["mldht_get_immutable"]["value"] == "immutable from webtorrent"
    assert step["mutable_target_agrees"]  # SHA-1(k + salt) computed alike
    assert step["wt_put_mutable"]["nodes"] >= 6 and step["mutable_stored_by_mldht_nodes"] >= 5
    got = step["mldht_get_mutable"]
    assert got["value"] == "mutable from webtorrent" and got["seq"] == 7 and got["invalid"] == 0


def test_bep33_libtorrent_filters_match_mldht(report):
    step = _step(report, "bep33_libtorrent")
    assert {"BFsd", "BFpe"} <= set(step["keys"])
    # libtorrent's 256-byte filters of the announcers' IPs are exactly the ones mldht builds.
    assert step["bfsd_equals_mldht_filter"] and step["bfpe_equals_mldht_filter"]
    assert step["estimate"] == {"seeds": 2.0, "peers": 1.0, "filters": 1}
