"""Failed OPC UA logins are throttled per address and per user name."""

from __future__ import annotations

from typing import Any

import pytest
from asyncua import ua
from structlog.testing import capture_logs

from helpers.opcua import PASSWORD, USER, WRONG_PASSWORD, Env, connected, point_node, serving
from smartpole.agent.uplink import opcua_auth
from smartpole.agent.uplink.opcua_throttle import LoginThrottle

PEER = "127.0.0.1"


@pytest.mark.asyncio
async def test_wrong_passwords_throttle_even_the_right_one_until_the_window_ends(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [500.0]
    checked: list[str] = []
    verify = opcua_auth.verify_password

    def counting(password: str, stored: str) -> bool:
        checked.append(password)
        return verify(password, stored)

    monkeypatch.setattr(opcua_auth, "verify_password", counting)
    with capture_logs() as logs:
        async with serving(env, clock=lambda: now[0]) as server:
            for _ in range(3):  # three free failures; the third starts a 1 s window
                with pytest.raises(ua.uaerrors.BadUserAccessDenied):
                    async with connected(env, password=WRONG_PASSWORD):
                        pass
            assert len(checked) == 3
            with pytest.raises(ua.uaerrors.BadUserAccessDenied):
                async with connected(env):  # the right password, refused unchecked
                    pass
            assert len(checked) == 3
            status = server.status()
            assert (status["login_failures"], status["login_refused_throttled"]) == (3, 1)
            assert (status["throttled_peers"], status["throttled_users"]) == ([PEER], 1)

            now[0] += 0.999
            with pytest.raises(ua.uaerrors.BadUserAccessDenied):
                async with connected(env):  # still inside the window
                    pass
            now[0] += 0.001
            async with connected(env) as client:
                voltage = await point_node(client, "meter", "voltage")
                assert await voltage.read_value() == 229.5
            assert checked[-1] == PASSWORD
            status = server.status()
            assert (status["throttled_peers"], status["throttled_users"]) == ([], 0)
            assert status["throttling_episodes"] == 2  # the address and the user name

            # The success cleared the count: one more failure does not throttle again.
            with pytest.raises(ua.uaerrors.BadUserAccessDenied):
                async with connected(env, password=WRONG_PASSWORD):
                    pass
            async with connected(env):
                pass
            assert server.status()["login_refused_throttled"] == 2
    started = [e for e in logs if e["event"] == "opcua_login_throttling_started"]
    ended = [e for e in logs if e["event"] == "opcua_login_throttling_ended"]
    assert sorted(map(_key, started)) == [("peer", PEER), ("user", USER)]
    assert sorted(map(_key, ended)) == [("peer", PEER), ("user", USER)]
    assert {(e["reason"], e["refused"]) for e in ended} == {("login_succeeded", 2)}
    text = repr(logs)
    assert PASSWORD not in text
    assert WRONG_PASSWORD not in text


def _key(event: dict[str, Any]) -> tuple[str, str]:
    return ("peer", event["peer"]) if "peer" in event else ("user", event["user"])


def test_window_doubles_up_to_the_maximum_and_counts_both_keys() -> None:
    now = [0.0]
    throttle = LoginThrottle(free_failures=2, base_s=1.0, max_s=8.0, clock=lambda: now[0])
    throttle.failed("10.0.0.1", "alice")
    assert throttle.check("10.0.0.1", "alice")
    windows = []
    for _ in range(6):
        throttle.failed("10.0.0.1", "alice")
        start = now[0]
        while not throttle.check("10.0.0.1", None):
            now[0] += 0.5
        windows.append(now[0] - start)
    assert windows == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    # The user name is throttled from any address, and the address for any user.
    throttle.failed("10.0.0.1", "alice")
    refused = throttle.refused
    assert not throttle.check("10.9.9.9", "alice")
    assert not throttle.check("10.0.0.1", "bob")
    assert throttle.check("10.9.9.9", "bob")
    assert throttle.refused == refused + 2


def test_quiet_keys_end_their_episode_and_memory_is_bounded() -> None:
    now = [0.0]
    throttle = LoginThrottle(free_failures=1, max_s=10.0, max_entries=4, clock=lambda: now[0])
    with capture_logs() as logs:
        throttle.failed("10.0.0.1", None)
        now[0] += 10.9
        throttle.sweep()
        assert [e["event"] for e in logs] == ["opcua_login_throttling_started"]
        now[0] += 0.1  # quiet for max_s past the 1 s window
        throttle.sweep()
    assert logs[-1]["event"] == "opcua_login_throttling_ended"
    assert logs[-1]["reason"] == "quiet"
    assert throttle.check("10.0.0.1", None)

    throttle.failed("10.0.0.1", None)  # throttled: kept while invented names come and go
    for n in range(20):
        throttle.failed(None, f"guess-{n}")
    assert len(throttle._entries) == 4
    assert not throttle.check("10.0.0.1", None)
