"""The camera worker's MQTT link to the roadside unit's broker: real time, never queued.

A V2X message is worth something for a few hundred milliseconds, so this client never holds
one back: QoS 0, not retained, and a message offered while the broker is away (or while
earlier ones still wait for the socket) is dropped and counted, never sent late. That is
also why it is not the uplink's outbox client. paho-mqtt runs its network loop on its own
thread (the worker itself is synchronous); it reconnects with a growing back-off.

Latency is measured from the frame's capture (a ``time.monotonic()`` reading the caller
passes in) to the moment paho has written the message to the socket: for QoS 0 paho calls
``on_publish`` exactly then. The last ``window`` samples give p50/p99. A message offered
with no capture time (``captured_s=None``) is sent and counted but not timed.

A broker outage is logged once when it starts and once when it clears, with how many
messages it cost; reconnect attempts in between only count.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, Self

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from smartpole.drivers.lifecycle import Closing
from smartpole.models.errors import AnalyticsConfigError


class EventLog(Protocol):
    """The two structlog methods the publisher uses (a test can pass its own recorder)."""

    def info(self, event: str, **kw: Any) -> Any: ...

    def warning(self, event: str, **kw: Any) -> Any: ...


_log: EventLog = structlog.get_logger("smartpole.v2x")


@dataclass(frozen=True)
class V2xStats:
    """What ``diag cameras`` and the worker's health line show of the V2X link."""

    connected: bool
    sent: int  # written to the socket
    dropped: int  # offered but never written: broker away, socket backed up, lost at a drop
    errors: int  # could not be encoded or handed to paho at all
    outages: int
    connect_failures: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    latency_samples: int


def untimed(captured_s: float | None) -> float:
    """The capture time to measure a message's latency from; NaN: not timed."""
    return math.nan if captured_s is None else captured_s


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty list."""
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


class V2xPublisher(Closing):
    """One broker connection for one camera worker; a context manager around its thread."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        tls: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
        keepalive_s: int = 15,
        backoff_s: tuple[int, int] = (1, 30),
        window: int = 600,
        max_in_flight: int = 64,
        clock: Callable[[], float] = time.monotonic,
        log: EventLog | None = None,
    ) -> None:
        if not 0 < port < 65536:
            raise AnalyticsConfigError(f"v2x broker port {port} is not a TCP port")
        if window < 1 or max_in_flight < 1:
            raise AnalyticsConfigError("v2x window and max_in_flight must be positive")
        self.host, self.port = host, port
        self._keepalive_s = keepalive_s
        self._clock = clock
        self._log = log if log is not None else _log
        self._max_in_flight = max_in_flight
        self._lock = threading.Condition()
        self._connected = False
        self._down_since: float | None = None
        self._dropped_at_outage = 0
        self._sent = self._dropped = self._errors = 0
        self._outages = self._connect_failures = 0
        self._pending: dict[int, float] = {}  # mid -> capture time, handed to paho, not written
        self._written: dict[int, float] = {}  # mid -> write time, written before it was pending
        self._samples: deque[float] = deque(maxlen=window)
        self._started = False
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        try:
            if tls is not None:
                client.tls_set_context(tls)
            if username is not None:
                client.username_pw_set(username, password)
            client.reconnect_delay_set(*backoff_s)
        except ValueError as error:
            raise AnalyticsConfigError(f"v2x broker settings: {error}") from error
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the network thread; the first connection is made there, with back-off."""
        if self._started:
            return
        try:
            self._client.connect_async(self.host, self.port, keepalive=self._keepalive_s)
        except (ValueError, OSError) as error:
            raise AnalyticsConfigError(f"v2x broker {self.host}:{self.port}: {error}") from error
        self._client.loop_start()
        self._started = True

    def close(self, timeout_s: float = 1.0) -> None:
        """Disconnect and stop the thread. A broker that stopped reading would hold paho's
        thread until the keepalive ran out (its DISCONNECT waits behind unsent messages), so
        after ``timeout_s`` the socket is shut under it."""
        if not self._started:
            return
        self._started = False
        self._client.disconnect()
        with self._lock:
            clean = self._lock.wait_for(lambda: not self._connected, timeout_s)
        if not clean:
            sock = self._client.socket()
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._client.loop_stop()
        with self._lock:
            self._connected = False
            self._lock.notify_all()

    def __enter__(self) -> Self:
        self.start()
        return self

    def wait(self, *, connected: bool = True, failures: int = 0, timeout: float) -> bool:
        """Block until the link is (dis)connected and at least ``failures`` connection attempts
        have failed; False on timeout. For start-up and tests, not for the frame loop."""
        with self._lock:
            return self._lock.wait_for(
                lambda: self._connected == connected and self._connect_failures >= failures,
                timeout,
            )

    # -- publishing -------------------------------------------------------------------------

    def publish(
        self, topic: str, payload: Mapping[str, Any] | bytes, *, captured_s: float | None
    ) -> bool:
        """Offer one message; True when paho took it for the socket. Never blocks on the
        network and never raises for a broker problem: a message that cannot go now is
        dropped and counted."""
        try:
            data = (
                payload
                if isinstance(payload, bytes)
                else json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
            )
        except (TypeError, ValueError):
            with self._lock:
                self._errors += 1
            return False
        with self._lock:
            if not self._connected or len(self._pending) >= self._max_in_flight:
                self._dropped += 1
                return False
        try:
            info = self._client.publish(topic, data, qos=0, retain=False)
        except (ValueError, TypeError):
            with self._lock:
                self._errors += 1
            return False
        with self._lock:
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._dropped += 1
                return False
            written = self._written.pop(info.mid, None)
            if written is not None:
                self._sample(written - untimed(captured_s))
            else:
                self._pending[info.mid] = untimed(captured_s)
        return True

    def stats(self) -> V2xStats:
        with self._lock:
            ordered = sorted(self._samples)
            return V2xStats(
                connected=self._connected,
                sent=self._sent,
                dropped=self._dropped,
                errors=self._errors,
                outages=self._outages,
                connect_failures=self._connect_failures,
                latency_p50_ms=percentile(ordered, 50) * 1000 if ordered else None,
                latency_p99_ms=percentile(ordered, 99) * 1000 if ordered else None,
                latency_samples=len(ordered),
            )

    # -- paho's thread ----------------------------------------------------------------------

    def _sample(self, latency_s: float) -> None:
        """One message written; its latency joins the window unless it was not timed (NaN)."""
        self._sent += 1
        if not math.isnan(latency_s):
            self._samples.append(max(0.0, latency_s))

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        now = self._clock()
        with self._lock:
            captured = self._pending.pop(mid, None)
            if captured is not None:
                self._sample(now - captured)
            else:  # paho wrote it before publish() returned the mid
                self._written[mid] = now

    def _went_down(self, reason: str) -> None:
        """Under the lock: the first sign of an outage logs it; later ones only count."""
        self._connected = False
        # What paho still held for the socket is lost with it (QoS 0 is not resent).
        self._dropped += len(self._pending)
        self._pending.clear()
        self._written.clear()
        if self._down_since is None:
            self._down_since = self._clock()
            self._dropped_at_outage = self._dropped
            self._outages += 1
            self._log.warning("v2x_broker_down", host=self.host, port=self.port, reason=reason)
        self._lock.notify_all()

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        with self._lock:
            if reason_code.is_failure:
                self._connect_failures += 1
                self._went_down(f"refused: {reason_code}")
                return
            self._connected = True
            if self._down_since is not None:
                self._log.info(
                    "v2x_broker_up",
                    host=self.host,
                    port=self.port,
                    down_s=round(self._clock() - self._down_since, 3),
                    dropped=self._dropped - self._dropped_at_outage,
                )
                self._down_since = None
            self._lock.notify_all()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        with self._lock:
            self._connect_failures += 1
            self._went_down("unreachable")

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        with self._lock:
            if not self._started:  # our own close()
                self._connected = False
                self._lock.notify_all()
                return
            self._went_down(f"lost: {reason_code}")
