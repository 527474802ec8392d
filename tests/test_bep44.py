"""BEP 44 put/get: the spec's test vectors, the item store, the wire checks and their error
codes, a network of nodes on loopback, and `mldht put` / `mldht get`."""

from __future__ import annotations

import hashlib
import json
import re
import time

import pytest
from hypothesis import given, settings, strategies as st

from dhtnet import AsyncRawSocket, DhtNetwork, decode, encode, net, run_cli  # noqa: F401 (net: fixture)
from mldht import DHTNode, KeyPair, NodeConfig, NodeId
from mldht.bep44 import (
    CAS_MISMATCH, INVALID_SIGNATURE, SALT_TOO_BIG, SEQ_TOO_LOW, VALUE_TOO_BIG, Item, ItemStore,
    StoreRejected, _Stored, immutable_target, mutable_target, signable, verify_signature,
)
from mldht.errors import KrpcDecodeError
from mldht.ids import distance
from mldht.krpc import Get, Put, decode_message, encode_message

# --- the spec's test vectors (bep_0044.rst, "Test Vectors") ------------------------------

STORE = NodeConfig().store_nodes
"""How many nodes a put goes to."""

VALUE = b"Hello World!"
PUBLIC_KEY = bytes.fromhex("77ff84905a91936367c01360803104f92432fcd904a43511876df5cdf3e7e548")
SIGNATURE_1 = bytes.fromhex(
    "305ac8aeb6c9c151fa120f120ea2cfb923564e11552d06a5d856091e5e853cff"
    "1260d3f39e4999684aa92eb73ffd136e6f4f3ecbfda0ce53a1608ecd7ae21f01")
SIGNATURE_2 = bytes.fromhex(
    "6834284b6b24c3204eb2fea824d82f88883a3d95e8b4a21b8c0ded553d17d17d"
    "df9a8a7104b1258f30bed3787e6cb896fca78c58f8e03b5f18f14951a87d9a08")


def test_vector_1_mutable():
    assert signable(b"12:Hello World!", 1) == b"3:seqi1e1:v12:Hello World!"
    assert mutable_target(PUBLIC_KEY).hex() == "4a533d47ec9c7d95b1ad75f576cffc641853b750"
    assert verify_signature(PUBLIC_KEY, SIGNATURE_1, b"3:seqi1e1:v12:Hello World!")
    item = Item(value=VALUE, encoded=b"12:Hello World!", public_key=PUBLIC_KEY, seq=1,
                signature=SIGNATURE_1)
    assert item.is_valid_for(bytes.fromhex("4a533d47ec9c7d95b1ad75f576cffc641853b750"))


def test_vector_2_mutable_with_salt():
    assert signable(b"12:Hello World!", 1, b"foobar") == b"4:salt6:foobar3:seqi1e1:v12:Hello World!"
    assert mutable_target(PUBLIC_KEY, b"foobar").hex() == "411eba73b6f087ca51a3795d9c8c938d365e32c1"
    item = Item(value=VALUE, encoded=b"12:Hello World!", public_key=PUBLIC_KEY, salt=b"foobar",
                seq=1, signature=SIGNATURE_2)
    assert item.problem() is None
    assert item.target.hex() == "411eba73b6f087ca51a3795d9c8c938d365e32c1"
    # The salt is part of what is signed: the same signature without it is invalid.
    unsalted = Item(value=VALUE, encoded=b"12:Hello World!", public_key=PUBLIC_KEY, seq=1,
                    signature=SIGNATURE_2)
    assert unsalted.problem() == (INVALID_SIGNATURE, "invalid signature")


def test_vector_3_immutable():
    item = Item.immutable("Hello World!")
    assert item.encoded == b"12:Hello World!"
    assert item.target.hex() == "e5f96f6f38320f0f33959cb4d3d656452117aadb"
    assert immutable_target(b"12:Hello World!") == item.target


def test_libtorrent_expanded_key_matches_the_spec_vector_layout():
    # The spec's private key is in the ref10 layout (64 bytes): its second half is the
    # nonce part of SHA-512(seed). Our expansion of a seed has the clamping bits the
    # layout requires, and one seed always gives the same public key.
    keys = KeyPair(bytes(range(32)))
    expanded = keys.expanded_secret
    assert len(expanded) == 64 and expanded[0] & 7 == 0 and expanded[31] & 0xC0 == 0x40
    assert KeyPair(bytes(range(32))).public_key == keys.public_key


# --- items and signatures ----------------------------------------------------------------


def test_signed_items_verify_and_tampering_is_caught():
    keys = KeyPair.generate()
    item = Item.mutable(keys, {b"a": [1, b"x"]}, seq=7, salt=b"s")
    assert item.problem() is None and item.is_valid_for(mutable_target(keys.public_key, b"s"))
    assert not item.is_valid_for(mutable_target(keys.public_key))  # the salt is in the target
    forged = Item(value=b"other", encoded=b"5:other", public_key=keys.public_key, salt=b"s",
                  seq=7, signature=item.signature)
    assert forged.problem()[0] == INVALID_SIGNATURE
    replayed_seq = Item(value=item.value, encoded=item.encoded, public_key=keys.public_key,
                        salt=b"s", seq=8, signature=item.signature)
    assert replayed_seq.problem()[0] == INVALID_SIGNATURE


def test_size_limits():
    assert Item.immutable(b"x" * 995).problem() is None  # 999 bytes bencoded
    assert Item.immutable(b"x" * 996).problem() is None  # 1000 bytes
    assert Item.immutable(b"x" * 997).problem()[0] == VALUE_TOO_BIG
    keys = KeyPair.generate()
    assert Item.mutable(keys, b"v", 1, salt=b"s" * 64).problem() is None
    assert Item.mutable(keys, b"v", 1, salt=b"s" * 65).problem()[0] == SALT_TOO_BIG


def test_key_file_is_created_once_with_private_mode(tmp_path):
    path = tmp_path / "key"
    keys, created = KeyPair.load_or_create(path)
    assert created and (path.stat().st_mode & 0o777) == 0o600
    again, created = KeyPair.load_or_create(path)
    assert not created and again.public_key == keys.public_key
    path.write_text("not a key\n")
    with pytest.raises(ValueError, match="64 hex digits"):
        KeyPair.load_or_create(path)


# --- the store ---------------------------------------------------------------------------

OWN_ID = bytes(20)


def test_store_seq_cas_and_renewal():
    store = ItemStore()
    keys = KeyPair.generate()
    store.put(Item.mutable(keys, b"one", 1), 0.0, OWN_ID)
    target = mutable_target(keys.public_key)
    with pytest.raises(StoreRejected) as lower:
        store.put(Item.mutable(keys, b"zero", 0), 1.0, OWN_ID)
    assert lower.value.code == SEQ_TOO_LOW
    with pytest.raises(StoreRejected) as same_seq_other_value:
        store.put(Item.mutable(keys, b"uno", 1), 1.0, OWN_ID)
    assert same_seq_other_value.value.code == SEQ_TOO_LOW
    with pytest.raises(StoreRejected) as cas:
        store.put(Item.mutable(keys, b"two", 2), 1.0, OWN_ID, cas=5)
    assert cas.value.code == CAS_MISMATCH
    store.put(Item.mutable(keys, b"two", 2), 1.0, OWN_ID, cas=1)
    assert store.get(target, 2.0).value == b"two"
    # The same item put again renews its two hours; otherwise it expires.
    store.put(Item.mutable(keys, b"two", 2), 7000.0, OWN_ID)
    assert store.get(target, 7000.0 + 7199).value == b"two"
    assert store.get(target, 7000.0 + 7200) is None
    # cas is ignored when nothing is stored.
    store.put(Item.mutable(keys, b"three", 3), 20000.0, OWN_ID, cas=99)
    assert store.get(target, 20000.0).seq == 3


def test_store_is_bounded_and_keeps_the_items_nearest_to_us():
    store = ItemStore(max_items=10)
    items = [Item.immutable(i) for i in range(30)]
    for item in items:
        store.put(item, 0.0, OWN_ID)
    assert len(store) == 10
    nearest = sorted(items, key=lambda item: int.from_bytes(item.target, "big"))[:10]
    assert sorted(store.targets()) == sorted(item.target for item in nearest)
    assert store.expire(7200.0) == 10 and len(store) == 0
    keeps_none = ItemStore(max_items=0)
    keeps_none.put(items[0], 0.0, OWN_ID)
    assert len(keeps_none) == 0


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 20), st.booleans(),
                          st.sampled_from([OWN_ID, b"\xff" * 20])), max_size=80))
def test_store_matches_a_plain_model_of_its_rules(operations):
    """The heap-backed store keeps exactly what the rules say: expire what was not put again
    within the lifetime, then, when full, drop the item farthest from our id (the newcomer
    when it is the farthest), measured from the own id of that put."""
    store = ItemStore(max_items=8, lifetime=100.0)
    model: dict[bytes, float] = {}
    now = 0.0
    for value, step, expire, own_id in operations:
        now += step
        if expire:
            expected = {t for t, at in model.items() if now - at >= 100.0}
            assert store.expire(now) == len(expected)
            model = {t: at for t, at in model.items() if t not in expected}
        item = Item.immutable(value)
        if item.target in model and now - model[item.target] >= 100.0:
            del model[item.target]
        if item.target not in model and len(model) >= 8:
            model = {t: at for t, at in model.items() if now - at < 100.0}
        if item.target not in model and len(model) >= 8:
            farthest = max(model, key=lambda t: distance(t, own_id))
            if distance(farthest, own_id) <= distance(item.target, own_id):
                store.put(item, now, own_id)
                assert sorted(store.targets()) == sorted(model)
                continue
            del model[farthest]
        model[item.target] = now
        store.put(item, now, own_id)
        assert sorted(store.targets()) == sorted(model)


# --- wire: decoding ----------------------------------------------------------------------

ID = NodeId(b"\x01" * 20)


def test_get_and_put_round_trip():
    get = Get(transaction_id=b"aa", sender_id=ID, target=NodeId(b"\x02" * 20), seq=4)
    assert decode_message(encode_message(get)) == get
    keys = KeyPair.generate()
    item = Item.mutable(keys, [b"a", 1], 3, b"salt")
    put = Put(transaction_id=b"bb", sender_id=ID, token=b"tok", value=item.value,
              encoded_value=item.encoded, public_key=item.public_key, signature=item.signature,
              seq=3, salt=b"salt", cas=2)
    assert decode_message(encode_message(put)) == put


def _raw_put(v: bytes, extra: bytes = b"") -> bytes:
    return (b"d1:ad2:id20:" + b"\x01" * 20 + extra + b"5:token3:tok1:v" + v
            + b"e1:q3:put1:t2:aa1:y1:qe")


def test_put_value_must_be_canonical_bencode():
    assert decode_message(_raw_put(b"d1:ai1e1:bi2ee")).encoded_value == b"d1:ai1e1:bi2ee"
    with pytest.raises(KrpcDecodeError, match="canonical") as unsorted:
        decode_message(_raw_put(b"d1:bi2e1:ai1ee"))
    assert unsorted.value.is_query and unsorted.value.transaction_id == b"aa"
    with pytest.raises(KrpcDecodeError, match="canonical"):
        decode_message(_raw_put(b"d1:ai1e1:ai2ee"))  # a repeated key


@pytest.mark.parametrize("arguments, problem", [
    (b"1:k3:abc", "'a.k' must be a string of 32 bytes"),
    (b"1:k32:" + b"k" * 32, "missing 'a.sig'"),
    (b"1:k32:" + b"k" * 32 + b"3:sig64:" + b"s" * 64, "missing 'a.seq'"),
    (b"1:k32:" + b"k" * 32 + b"3:seqi-1e3:sig64:" + b"s" * 64, "must not be negative"),
])
def test_malformed_mutable_puts(arguments, problem):
    with pytest.raises(KrpcDecodeError, match=problem):
        decode_message(_raw_put(b"1:x", arguments))


# --- a node answering get and put --------------------------------------------------------


@pytest.fixture
async def server():
    async with DHTNode(("127.0.0.195", 0), bootstrap=[]) as node:
        yield node


class _Client:
    """Raw KRPC from a bare socket, waiting without blocking the server's event loop."""

    def __init__(self) -> None:
        self.socket = AsyncRawSocket("127.0.0.196")
        self.sent = 0

    async def request(self, address, method: bytes, arguments: dict) -> dict | None:
        self.sent += 1
        tid = b"q%d" % self.sent
        await self.send(encode({b"t": tid, b"y": b"q", b"q": method, b"a": arguments}), address)
        return await self.reply(tid)

    async def send(self, data: bytes, address) -> None:
        await self.socket.send(data, address)

    async def reply(self, tid: bytes, timeout: float = 2.0) -> dict | None:
        deadline = time.monotonic() + timeout  # bounded even if other datagrams keep coming
        while (left := deadline - time.monotonic()) > 0:
            received = await self.socket.recv(left)
            if received is None:
                return None
            message = decode(received[0])
            if isinstance(message, dict) and message.get(b"t") == tid:
                return message
        return None


def _client() -> _Client:
    return _Client()


async def _token(client: _Client, server: DHTNode, target: bytes, extra: dict | None = None) -> dict:
    reply = await client.request(server.address, b"get",
                                 {b"id": b"c" * 20, b"target": target, **(extra or {})})
    assert reply is not None and reply[b"y"] == b"r", reply
    return reply[b"r"]


async def _put(client, server, item: Item, token: bytes, extra: dict | None = None) -> dict:
    arguments = {b"id": b"c" * 20, b"token": token, b"v": item.value, **(extra or {})}
    if item.is_mutable:
        arguments.update({b"k": item.public_key, b"seq": item.seq, b"sig": item.signature})
        if item.salt:
            arguments[b"salt"] = item.salt
    reply = await client.request(server.address, b"put", arguments)
    assert reply is not None
    return reply


def _code(reply: dict) -> int | None:
    return reply[b"e"][0] if reply[b"y"] == b"e" else None


@pytest.mark.network
async def test_node_stores_and_serves_immutable_items(server):
    client = _client()
    try:
        item = Item.immutable(b"Hello World!")
        first = await _token(client, server, item.target)
        assert b"v" not in first and first[b"token"]
        assert _code(await _put(client, server, item, b"wrong")) == 203
        assert _code(await _put(client, server, item, first[b"token"])) is None
        reply = await _token(client, server, item.target)
        assert reply[b"v"] == b"Hello World!" and b"k" not in reply
        # A token is bound to its target: another item cannot be put with it.
        other = Item.immutable(b"other")
        assert _code(await _put(client, server, other, first[b"token"])) == 203
        too_big = Item.immutable(b"x" * 1000)
        big_token = (await _token(client, server, too_big.target))[b"token"]
        assert _code(await _put(client, server, too_big, big_token)) == 205
    finally:
        client.socket.close()


@pytest.mark.network
async def test_node_enforces_mutable_item_rules(server):
    client = _client()
    try:
        keys = KeyPair.generate()
        one = Item.mutable(keys, b"one", 1, b"salt")
        token = (await _token(client, server, one.target))[b"token"]
        assert _code(await _put(client, server, one, token)) is None
        got = await _token(client, server, one.target)
        assert (got[b"v"], got[b"seq"], got[b"k"], got[b"sig"]) == (b"one", 1, keys.public_key,
                                                                    one.signature)
        assert b"salt" not in got  # the BEP: the salt is not returned
        # get with seq: an item not newer than that seq comes without k, v and sig.
        newer_only = await _token(client, server, one.target, {b"seq": 1})
        assert newer_only[b"seq"] == 1 and not {b"v", b"k", b"sig"} & set(newer_only)
        zero = Item.mutable(keys, b"zero", 0, b"salt")
        assert _code(await _put(client, server, zero, token)) == 302
        two = Item.mutable(keys, b"two", 2, b"salt")
        assert _code(await _put(client, server, two, token, {b"cas": 7})) == 301
        forged = Item(value=b"evil", encoded=b"4:evil", public_key=keys.public_key, salt=b"salt",
                      seq=3, signature=one.signature)
        assert _code(await _put(client, server, forged, token)) == 206
        long_salt = Item.mutable(keys, b"v", 1, b"s" * 65)
        assert _code(await _put(client, server, long_salt, token)) == 207
        assert _code(await _put(client, server, two, token, {b"cas": 1})) is None
        assert (await _token(client, server, one.target))[b"v"] == b"two"
        # Not canonical: 203, nothing stored.
        raw = (b"d1:ad2:id20:" + b"c" * 20 + b"5:token" + b"%d:" % len(token) + token
               + b"1:vd1:bi2e1:ai1eee1:q3:put1:t2:zz1:y1:qe")
        await client.send(raw, server.address)
        refused = await client.reply(b"zz")
        assert refused is not None and refused[b"e"][0] == 203, refused
    finally:
        client.socket.close()


# --- a network -----------------------------------------------------------------------------

@pytest.mark.network
@pytest.mark.asyncio(loop_scope="module")
async def test_put_and_get_across_the_network(net: DhtNetwork):
    value = {b"name": b"mldht", b"list": [1, 2, 3]}
    put = await net.nodes[3].put_immutable(value, timeout=10)
    # Every node that gave a token took it: the k closest at least, up to STORE (a lookup
    # of 30 nodes whose replies list 8 each may not hear of STORE).
    assert 8 <= put.asked <= STORE and len(put.stored_on) == put.asked and not put.errors
    stored_ids = {node.id for node in put.stored_on}
    assert set(net.true_closest(put.item.target, exclude=net.nodes[3].node_id)) <= stored_ids
    got = await net.nodes[20].get_item(put.item.target, timeout=10)
    assert got.item == put.item and got.copies >= 1 and got.invalid == 0

    keys = KeyPair.generate()
    target = mutable_target(keys.public_key, b"room")
    # Writers outside the STORE + 1 nodes nearest the item: each one stores on the same nodes.
    near = set(net.true_closest(target, k=STORE + 1))
    writers = [node for node in net.nodes[1:] if node.node_id not in near]
    first = await writers[0].put_mutable(keys, b"v1", salt=b"room", timeout=10)
    assert first.item.seq == 1 and len(first.stored_on) >= 8
    second = await writers[1].put_mutable(keys, b"v2", salt=b"room", timeout=10)
    assert second.item.seq == 2 and len(second.stored_on) >= 8  # seq found, plus one
    stale = await writers[2].put_mutable(keys, b"old", salt=b"room", seq=1, timeout=10)
    # The 8 closest hold seq 2 and refuse; a node farther out that the first puts missed
    # may take it (it is outside every lookup's k closest).
    nearest = set(net.true_closest(target))
    assert stale.errors.get(302, 0) >= 8 and not nearest & {n.id for n in stale.stored_on}
    race = await writers[2].put_mutable(keys, b"v3", salt=b"room", seq=3, cas=1, timeout=10)
    # A cas behind the newest seq found goes only to that seq's holders: stored nowhere, so
    # its seq 3 cannot shadow seq 2 for readers who reach nodes the first puts missed.
    assert race.errors.get(301, 0) >= 8 and race.errors[301] == race.asked
    assert race.stored_on == []
    got = await writers[3].get_item(target, salt=b"room", timeout=10)
    assert got.item is not None and got.item.value == b"v2" and got.item.seq == 2
    assert got.copies >= 8
    # Without the salt the item cannot be verified, so it is not believed.
    unsalted = await writers[3].get_item(target, timeout=10)
    assert unsalted.item is None and unsalted.invalid >= 1
    missing = await net.nodes[25].get_item(hashlib.sha1(b"nothing").digest(), timeout=10)
    assert missing.item is None and missing.summary.answered >= 8


@pytest.mark.network
@pytest.mark.asyncio(loop_scope="module")
async def test_a_lying_node_cannot_fake_an_item(net: DhtNetwork):
    # A node serving a value under the wrong target (as if its store were corrupt) is
    # counted as invalid; the genuine copies win.
    put = await net.nodes[8].put_immutable(b"genuine", timeout=10)
    liar = next(node for node in net.nodes if node.node_id == put.stored_on[0].id)
    liar.item_store._items[put.item.target] = _Stored(Item(value=b"fake", encoded=b"4:fake"),
                                                       liar.clock())
    got = await net.nodes[9].get_item(put.item.target, timeout=10)
    assert got.item is not None and got.item.value == b"genuine"


# --- the command line --------------------------------------------------------------------


async def cli(*args: str) -> tuple[int, str, str]:
    result = await run_cli(*args)
    return result.returncode, result.stdout, result.stderr


@pytest.mark.network
@pytest.mark.asyncio(loop_scope="module")
async def test_cli_put_and_get(net: DhtNetwork, tmp_path):
    boot = ["--bootstrap", net.bootstrap_spec, "--timeout", "10"]
    code, out, err = await cli("put", "hello from the command line",
                                   "--bind", "127.0.0.200:0", *boot)
    assert code == 0, err
    target = out.strip()
    assert target == Item.immutable(b"hello from the command line").target.hex()
    stored = re.search(r"stored on (\d+) of the (\d+) closest nodes", err)
    assert stored and 8 <= int(stored[1]) == int(stored[2]) <= STORE, err
    code, out, err = await cli("get", target, "--bind", "127.0.0.201:0", *boot)
    assert code == 0 and out == "hello from the command line\n", err

    key = tmp_path / "key"
    code, out, err = await cli("put", "--key", str(key), "--salt", "s1", "first",
                                   "--bind", "127.0.0.200:0", *boot)
    assert code == 0 and key.exists() and "new key written" in err, err
    public_key = KeyPair.load_or_create(key)[0].public_key
    code, out, err = await cli("put", "--key", str(key), "--salt", "s1", "--bencoded",
                                   "d1:ai1ee", "--bind", "127.0.0.200:0", "--json", *boot)
    assert code == 0, err
    report = json.loads(out)
    assert report["seq"] == 2 and 8 <= report["stored"] == report["asked"] <= STORE
    code, out, err = await cli("get", public_key.hex(), "--salt", "s1", "--json",
                                   "--bind", "127.0.0.201:0", *boot)
    got = json.loads(out)
    assert code == 0 and got["value"] == {"a": 1} and got["seq"] == 2, err
    assert got["target"] == mutable_target(public_key, b"s1").hex()


@pytest.mark.parametrize("args, message", [
    (["get", "abc"], "neither 40 hex digits"),
    (["put", "x", "--salt", "s"], "give --key FILE"),
    (["put", "x" * 1000], "too big"),
    (["put", "--bencoded", "d1:bi1e1:ai2ee"], "not canonical"),
    (["put", "--bencoded", "i1"], "not valid bencode"),
])
async def test_cli_bad_input_exits_2(args, message):
    code, out, err = await cli(*args, "--bootstrap", "127.0.0.1:9", "--bind", "127.0.0.202:0")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert out == ""


# --- property: the raw value is located exactly, whatever it is ---------------------------
_values = st.recursive(
    st.integers(min_value=-2**70, max_value=2**70) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.binary(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(value=_values, salt=st.binary(max_size=70))
def test_put_value_bytes_are_found_exactly(value, salt):
    keys = KeyPair(b"\x07" * 32)
    item = Item.mutable(keys, value, seq=3, salt=salt)
    put = Put(transaction_id=b"tt", sender_id=ID, token=b"tok", value=item.value,
              encoded_value=item.encoded, public_key=item.public_key, signature=item.signature,
              seq=3, salt=salt)
    decoded = decode_message(encode_message(put))
    assert decoded.encoded_value == item.encoded and decoded.value == item.value
    assert (decoded.salt, decoded.seq, decoded.signature) == (salt, 3, item.signature)
