"""BEP 42 on lab addresses (scenario_bep42.py): 12 mldht nodes start with random ids, learn
their external IP from the `ip` key of replies, move to secure ids, and an enforcing mldht
node and an enforcing libtorrent (dht_enforce_node_id) keep them."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.network, pytest.mark.lab("bep42")]
NODES = 12


def test_every_node_learns_its_external_ip_and_moves_to_a_secure_id(lab_report):
    assert lab_report["ids_secure_at_start"] <= 1  # random ids: one in two million matches
    assert lab_report["external_ips_right"] == NODES
    assert lab_report["id_changes"] == [1] * NODES  # once each, not back and forth
    assert lab_report["ids_secure"] == NODES


def test_an_enforcing_node_keeps_only_secure_ids_and_still_finds_peers(lab_report):
    assert lab_report["enforcing_table"] >= 8
    assert lab_report["enforcing_table_insecure"] == 0
    assert lab_report["announced_to"] >= 1
    assert lab_report["found_by"] == 2  # a plain node and the enforcing one


def test_enforcing_libtorrent_keeps_mldht_and_mldht_keeps_it(lab_report):
    assert lab_report["mldht_in_libtorrent_table"] >= 8, lab_report
    assert lab_report["libtorrent_id_secure"]
    # The enforcing mldht node keeps libtorrent (a secure id): in its table, or waiting to
    # replace one of a full bucket of nodes that answered.
    assert lab_report["libtorrent_in_enforcing_table"] or (
        lab_report["libtorrent_waiting_in_enforcing_table"]
        and lab_report["libtorrent_bucket_in_enforcing_table"] == 8), lab_report
    assert lab_report["receive_path_failures"] == 0
