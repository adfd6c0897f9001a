"""The pure parts of access control: passwords, TOTP against oathtool, recovery codes,
allowlist and client addresses, sign-in throttling, and the policy table."""

from __future__ import annotations

import ipaddress

import pytest

from dragonfly.auth import passwords, totp
from dragonfly.auth.allowlist import allowed, client_address, parse_address, parse_networks
from dragonfly.auth.policy import Caller, decide, effective_caller
from dragonfly.auth.throttle import LoginThrottle, address_key
from dragonfly.errors import InvalidInput
from tests.test_auth_fixtures import Clock, oathtool


def test_password_hash_roundtrip_and_format() -> None:
    encoded = passwords.hash_password("a long passphrase", n=2 ** 12)
    scheme, n, r, p, salt, digest = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", "4096", "8", "1")
    assert "a long passphrase" not in encoded
    assert passwords.verify_password("a long passphrase", encoded)
    assert not passwords.verify_password("a long passphrasE", encoded)
    # Same password, fresh salt: different hashes.
    assert passwords.hash_password("a long passphrase", n=2 ** 12) != encoded


@pytest.mark.parametrize("bad", ["", "plain", "scrypt$x$8$1$AA$AA", "md5$1$2$3$4$5",
                                 "scrypt$16384$8$1$!!$AA", "scrypt$3$8$1$AAAA$AAAA"])
def test_malformed_hash_never_verifies_nor_raises(bad: str) -> None:
    assert passwords.verify_password("anything", bad) is False


def test_default_cost_is_memory_hard() -> None:
    encoded = passwords.hash_password("x" * 12)
    _, n, r, _p, _, _ = encoded.split("$")
    assert int(n) * int(r) * 128 >= 32 * 1024 * 1024  # at least 32 MiB per guess


@pytest.mark.parametrize("password,why", [
    ("short", "at least"), ("x" * 2000, "at most"), ("aaaaaaaaaaaa", "repetitive"),
    ("administrator", "account name"), (12345678901, "string")])
def test_password_policy(password: object, why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        passwords.check_password_policy(password, "administrator")


def test_totp_matches_oathtool_within_one_step_and_refuses_replay() -> None:
    secret = totp.new_secret()
    now = 1_750_000_015.0
    step = int(now // 30)
    for offset in (-1, 0, 1):
        code = oathtool(secret, now + offset * 30)
        assert totp.match_step(secret, code, now) == step + offset
    assert totp.match_step(secret, oathtool(secret, now - 60), now) is None
    assert totp.match_step(secret, oathtool(secret, now + 60), now) is None
    code = oathtool(secret, now)
    accepted = totp.verify(secret, code, now, last_step=0)
    assert accepted == step
    assert totp.verify(secret, code, now, last_step=accepted) is None  # replay
    # An older code from the window is refused once a newer step was used.
    assert totp.verify(secret, oathtool(secret, now - 30), now, last_step=accepted) is None
    assert totp.verify(secret, oathtool(secret, now + 30), now, last_step=accepted) == step + 1


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", None, 123456])
def test_totp_rejects_malformed_codes(code: object) -> None:
    assert totp.verify(totp.new_secret(), code, 1_750_000_000.0, 0) is None


def test_totp_enrollment_uri_and_qr() -> None:
    secret = totp.new_secret()
    assert len(secret) == 32
    uri = totp.provisioning_uri(secret, "alice")
    assert uri.startswith("otpauth://totp/Dragonfly:alice?") and f"secret={secret}" in uri
    qr = totp.qr_data_uri(uri)
    assert qr.startswith("data:image/svg+xml")
    assert "http" not in qr.split(",", 1)[1].replace("http%3A%2F%2Fwww.w3.org", "")


def test_recovery_codes() -> None:
    codes = totp.new_recovery_codes()
    assert len(codes) == 10 and len(set(codes)) == 10
    for code in codes:
        assert len(code) == 19 and code.count("-") == 3 and totp.looks_like_recovery(code)
    digest = totp.hash_recovery(codes[0])
    assert digest == totp.hash_recovery(codes[0].upper().replace("-", " "))
    assert codes[0] not in digest


def test_allowlist_v4_v6_and_mapped() -> None:
    nets = parse_networks(["10.0.0.0/8", "2001:db8::/32", " "])
    assert allowed(nets, parse_address("10.1.2.3"))
    assert allowed(nets, parse_address("::ffff:10.9.9.9"))  # dual-stack socket view
    assert allowed(nets, parse_address("2001:db8::1"))
    assert not allowed(nets, parse_address("192.168.1.1"))
    assert not allowed(nets, parse_address("2001:db9::1"))
    assert not allowed(nets, None)
    assert allowed([], parse_address("192.168.1.1"))  # empty: everyone
    assert parse_address("fe80::1%eth0") == ipaddress.ip_address("fe80::1")
    assert parse_address("not an address") is None


def test_client_address_trusts_only_configured_proxies() -> None:
    proxies = parse_networks(["127.0.0.1/32", "10.0.0.0/24"])
    # Not from a proxy: the header is ignored (a client could write anything there).
    assert str(client_address("192.0.2.7", "1.2.3.4", proxies)) == "192.0.2.7"
    # From a proxy: the right-most address that is not a proxy.
    assert str(client_address("127.0.0.1", "6.6.6.6, 192.0.2.9, 10.0.0.5", proxies)) == \
        "192.0.2.9"
    assert str(client_address("127.0.0.1", "garbage", proxies)) == "127.0.0.1"
    assert str(client_address("127.0.0.1", "1.2.3.4", [])) == "127.0.0.1"


def test_throttle_locks_out_and_forgets() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock)
    for _ in range(3):
        assert throttle.retry_after("u:bob", 3, 60) == 0
        throttle.fail("u:bob", 3, 60)
    assert throttle.retry_after("u:bob", 3, 60) == pytest.approx(60)
    clock.advance(30)
    assert throttle.retry_after("u:bob", 3, 60) == pytest.approx(30)
    clock.advance(31)
    assert throttle.retry_after("u:bob", 3, 60) == 0
    throttle.fail("u:bob", 1, 60)
    throttle.clear("u:bob")
    assert throttle.retry_after("u:bob", 1, 60) == 0


def test_a_flood_of_keys_does_not_lift_a_lockout() -> None:
    """Past its cap the throttle evicts, never forgets everything: an attacker with many
    addresses or made-up names cannot reset a target account's lock-out."""
    clock = Clock()
    throttle = LoginThrottle(clock, max_keys=100)
    for _ in range(3):
        throttle.fail("u:alice", 3, 600)
    for i in range(5000):
        clock.advance(0.01)
        throttle.fail(f"a:10.{i // 250}.{i % 250}.1", 20, 600)
        assert len(throttle) <= 101
    assert throttle.retry_after("u:alice", 3, 600) > 500
    # The newest key always survives its own eviction round.
    assert throttle.retry_after("a:10.19.249.1", 1, 600) > 0


def test_throttle_evicts_expired_then_unlocked_then_locked() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, max_keys=10)
    for i in range(4):
        throttle.fail(f"u:old{i}", 5, 60)
    clock.advance(61)  # the old ones have expired
    for i in range(7):
        throttle.fail(f"u:new{i}", 5, 60)
    # 11 keys pass the cap: every expired key goes, nothing else needs to.
    assert sorted(throttle._failures) == [f"u:new{i}" for i in range(7)]

    # Locked keys outlive newer keys that are not locked.
    throttle = LoginThrottle(clock, max_keys=10)
    for i in range(3):
        for _ in range(2):
            throttle.fail(f"u:locked{i}", 2, 60)
    for i in range(8):
        clock.advance(1)
        throttle.fail(f"a:192.0.2.{i}", 5, 60)
    assert len(throttle) == 9
    assert {f"u:locked{i}" for i in range(3)} <= set(throttle._failures)
    assert "a:192.0.2.0" not in throttle._failures  # least recently failed went first
    assert "a:192.0.2.1" not in throttle._failures
    assert all(throttle.retry_after(f"u:locked{i}", 2, 60) > 0 for i in range(3))

    # Only locked keys left: the memory bound wins, soonest-ending lock-outs go first, never
    # the key that just failed.
    throttle = LoginThrottle(clock, max_keys=10)
    for i in range(11):
        clock.advance(1)
        throttle.fail(f"u:l{i}", 1, 600)
    assert len(throttle) == 9
    assert "u:l0" not in throttle._failures and "u:l1" not in throttle._failures
    assert throttle.retry_after("u:l10", 1, 600) > 0


@pytest.mark.parametrize(("address", "key"), [
    ("192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("fe80::1%eth0", "fe80::/64"),
    ("", ""),
    ("not an address", "not an address"),
])
def test_throttle_counts_ipv6_clients_by_their_64(address: str, key: str) -> None:
    assert address_key(address) == key


def test_policy_table() -> None:
    def caller(role: str, via: str = "session") -> Caller:
        return Caller(name="x", role=role, via=via)

    anon = Caller()
    assert decide(anon, "public", "login") is None
    denial = decide(anon, "read", "login")
    assert denial is not None and denial.status == 401
    assert decide(effective_caller(Caller(), "open"), "read", "open") is None
    denial = decide(effective_caller(Caller(), "open"), "user", "open")
    assert denial is not None and denial.status == 401
    assert decide(caller("user"), "user", "login") is None
    denial = decide(caller("user"), "admin", "login")
    assert denial is not None and denial.status == 403
    denial = decide(caller("user"), "read", "admin")
    assert denial is not None and denial.status == 403 and "administrators" in denial.message
    assert decide(caller("admin"), "admin", "admin") is None
    assert decide(caller("user"), "public", "admin") is None
    denial = decide(caller("admin"), "weird", "login")
    assert denial is not None and denial.status == 403
