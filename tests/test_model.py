"""The lifecycle table and tag rules."""

from __future__ import annotations

import pytest

from dragonfly.domain.model import (
    TRANSITIONS,
    State,
    allowed_transitions,
    check_transition,
    lifecycle_markdown,
    normalise_mac,
    validate_tag,
    validate_tags,
)
from dragonfly.errors import Conflict, InvalidInput


def test_every_state_is_reachable_and_leavable() -> None:
    targets = {t.target for t in TRANSITIONS.values()}
    sources = set().union(*(t.sources for t in TRANSITIONS.values()))
    assert targets | {State.DISCOVERED} == set(State)
    assert sources == set(State)


def test_check_transition() -> None:
    assert check_transition(State.DISCOVERED, "adopt").target is State.READY
    with pytest.raises(Conflict) as err:
        check_transition(State.INSTALLED, "deploy")
    assert "reimage" in err.value.detail["allowed"]
    with pytest.raises(InvalidInput):
        check_transition(State.READY, "explode")


def test_destructive_actions_are_marked() -> None:
    assert {n for n, t in TRANSITIONS.items() if t.destructive} == {"deploy", "reimage",
                                                                   "release"}
    assert allowed_transitions(State.DEPLOYING) == ["deployed", "fail"]
    assert "| `adopt` | discovered | ready |" in lifecycle_markdown()


@pytest.mark.parametrize("bad", ["", "   ", "x" * 65, "a\x00b", "tab\there", "new\nline",
                                 "\x9b", "a,b", 5, None])
def test_invalid_tags(bad: object) -> None:
    with pytest.raises(InvalidInput):
        validate_tag(bad)


def test_valid_tags_are_normalised_and_deduplicated() -> None:
    assert validate_tag("  rack-a1 ") == "rack-a1"
    assert validate_tag("ünïcode/ok:1") == "ünïcode/ok:1"
    assert validate_tags(["a", "b", "a"]) == ["a", "b"]
    with pytest.raises(InvalidInput):
        validate_tags("a")
    with pytest.raises(InvalidInput):
        validate_tags([str(i) for i in range(65)])


def test_normalise_mac() -> None:
    assert normalise_mac("52-54-00-AB-cd-01") == "52:54:00:ab:cd:01"
    with pytest.raises(InvalidInput):
        normalise_mac("52:54:00")


def test_machine_to_dict_is_a_deep_copy_equal_to_asdict() -> None:
    from dataclasses import asdict

    from dragonfly.domain.model import Machine

    machine = Machine(id="m1", name="n", state=State.READY, mac="02:00:00:00:00:01",
                      macs=["02:00:00:00:00:01"], cpu={"model": "x", "flags": ["a", "b"]},
                      disks=[{"name": "sda", "size_bytes": 1, "smart": {"ok": True}}],
                      nics=[{"name": "eth0", "mac": "02:00:00:00:00:01"}],
                      bmc={"address": "10.0.0.9"}, tags=["t"])
    data = machine.to_dict()
    assert data == {**asdict(machine), "state": "ready"}
    data["cpu"]["flags"].append("c")
    data["disks"][0]["smart"]["ok"] = False
    data["tags"].append("u")
    assert machine.cpu["flags"] == ["a", "b"] and machine.disks[0]["smart"]["ok"] is True
    assert machine.tags == ["t"]
    assert Machine.from_dict(machine.to_dict()) == machine
