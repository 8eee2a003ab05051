"""Tests for vmxprobe.fleet.bounded: the fleet summary's state stays bounded whatever the
number of reports (Capped lists, Counter with a cap on distinct keys, NameSet of hashes)."""

import random

from vmxprobe.fleet import bounded as fleet_bounded


def test_capped_keeps_the_smallest():
    rng = random.Random(5)
    keys = list(range(1000))
    rng.shuffle(keys)
    c = fleet_bounded.Capped(10)
    for k in keys:
        c.add((f"h{k:04d}",), k)
    assert c.items() == list(range(10)) and c.count == 1000 and c.cut == 990


def test_name_set_finds_every_duplicate_and_grows():
    ns = fleet_bounded.NameSet(size=8)
    names = [f"node-{i}" for i in range(20000)]
    assert all(ns.add(n) == 0 for n in names)
    assert ns.add("node-5") == 1 and ns.add("node-5") == 2 and ns.add("node-19999") == 1
    assert ns.add("new") == 0


def test_group_keys_are_capped(monkeypatch):
    monkeypatch.setattr(fleet_bounded, "MAX_GROUP_KEYS", 3)
    c = fleet_bounded.Counter()
    for k in "aabcdde":
        c.add(k)
    assert c.counts == {"a": 2, "b": 1, "c": 1, fleet_bounded.OTHER: 3} and c.folded == 3


def test_capped_without_a_limit_keeps_all_in_key_order_ties_in_arrival_order():
    c = fleet_bounded.Capped(None)
    for key, item in [(("b",), 1), (("a",), 2), (("b",), 3), (("a",), 4)]:
        c.add(key, item)
    assert c.items() == [2, 4, 1, 3] and c.cut == 0
    assert c.as_json() == {"count": 4, "hosts": [2, 4, 1, 3], "cut": 0}


def test_capped_at_zero_keeps_nothing_but_counts():
    c = fleet_bounded.Capped(0)
    for k in range(5):
        c.add((k,), k)
    assert c.items() == [] and c.as_json("reports") == {"count": 5, "reports": [], "cut": 5}


def test_counter_orders_by_count_then_key():
    c = fleet_bounded.Counter()
    for k in ["0x12", "0x4", "0x4", "0x15", "0x15"]:
        c.add(k)
    assert c.ordered() == [("0x15", 2), ("0x4", 2), ("0x12", 1)] and c.folded == 0
