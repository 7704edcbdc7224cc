"""The MQTT uplink: drain the outbox to the city broker, in order, at a bounded rate.

One task owns one broker connection at a time (aiomqtt over paho, MQTT 5 with a 3.1.1
fallback). On connect it publishes the retained point metadata (``meta``, see ``meta.py``)
and then the retained birth message ``state = online``; the broker publishes the retained
last will ``state = offline`` when the connection dies without a DISCONNECT (SIGKILL, power
cut, lost link). Will, birth and meta of one connection carry the same session number
(``session.py``), so the platform pairs an ``offline`` with the ``online`` it ends. Then it
drains the outbox stream by stream, most urgent stream first and each stream strictly by
sequence number, at QoS 1 with a window of publishes in flight; a record is acknowledged in
the outbox (deleted) only once the broker's PUBACK for it and every earlier record of its
stream arrived. A connection lost in between means the unacknowledged records go again
after the reconnect: at-least-once, and every message carries ``(epoch, stream, seq)`` so
the platform drops the duplicates.

Reconnects back off exponentially with random jitter, and every record, backlog included,
passes one token bucket (``replay_rate_per_s``, ``replay_burst``) so a fleet that comes
back after an outage does not flood the broker. A failure is logged once when it starts and
once when it clears; in between it is only counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from smartpole.agent.config.safefile import read_small_file
from smartpole.agent.config.uplink import UplinkConfig
from smartpole.agent.core.outbox import Outbox, OutboxError, OutboxRecord, Priority
from smartpole.agent.uplink.meta import PoleMeta
from smartpole.agent.uplink.session import SessionCounter
from smartpole.agent.uplink.topics import COMMAND_RESULT_STREAM, STREAM_RANK, Topics, stream_rank
from smartpole.drivers.lifecycle import Lifecycle

log = structlog.get_logger("smartpole.uplink")

AGENT = "smartpole/0.1"
RATE_WINDOW_S = 10.0
SECRET_FILE_BYTES = 4096  # a user name or password file; a FIFO here would block the loop
# CONNACK codes meaning "not this protocol version": 1 (3.1.1), 0x84 (MQTT 5).
_WRONG_PROTOCOL = {1, 132}
_NO_CONNACK = "Operation timed out"  # aiomqtt's MqttError when the CONNACK does not come


class CommandHandler(Protocol):
    """What the uplink needs from the command processor (agent/uplink/commands.py)."""

    async def handle(self, payload: bytes, *, source: str) -> dict[str, Any]: ...

    def stats(self) -> dict[str, object]: ...


class UplinkError(Exception):
    """A connection attempt failed before the broker was involved (credentials, TLS files)."""


class _ClosingSSLSocket(ssl.SSLSocket):
    """paho leaves the socket open when the TLS handshake fails; close it right there."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


class _TokenBucket:
    """At most ``rate`` records per second on average, ``burst`` back to back."""

    def __init__(self, rate: float, burst: int, monotonic: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._monotonic = monotonic
        self._at = monotonic()

    def _refill(self) -> None:
        now = self._monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def available(self) -> int:
        self._refill()
        return int(self._tokens)

    async def take(self, count: int) -> None:
        self._refill()
        while self._tokens < count:
            # Pacing, not synchronisation: the bucket refills with time alone.
            await asyncio.sleep((count - self._tokens) / self.rate)
            self._refill()
        self._tokens -= count


class MqttUplink(Lifecycle):
    """The uplink task. ``async with`` runs it in the background; the daemon awaits ``run``."""

    def __init__(
        self,
        config: UplinkConfig,
        *,
        pole_id: str,
        outbox: Outbox,
        base_dir: Path,
        commands: CommandHandler | None = None,
        meta: PoleMeta | None = None,
        sessions: SessionCounter | None = None,
        rng: random.Random | None = None,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.pole_id = pole_id
        self.topics = Topics(pole_id)
        self.outbox = outbox
        self.commands = commands
        self._base_dir = base_dir
        self.meta = meta if meta is not None else PoleMeta()
        self._sessions = sessions if sessions is not None else SessionCounter(None)
        self.session: int | None = None  # the number of the current (or last) attempt
        super().__init__()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._wall = wall
        self._monotonic = monotonic
        self._bucket = _TokenBucket(config.replay_rate_per_s, config.replay_burst, monotonic)
        self._window = min(config.window, config.replay_burst)
        self._wake = asyncio.Event()
        self._streams: set[str] = set(STREAM_RANK)
        self._protocol = (
            aiomqtt.ProtocolVersion.V5 if config.protocol == "5" else aiomqtt.ProtocolVersion.V311
        )
        self._command_tasks: set[asyncio.Task[None]] = set()
        self._entered = False  # the current connection attempt got its CONNACK
        self._sent: deque[tuple[float, int]] = deque()
        self._paho_log = logging.getLogger("smartpole.uplink.paho")
        # Counters and state for `diag uplink`.
        self.state = "starting"
        self.connects = 0
        self.failures = 0
        self.published = 0
        self.acked = 0
        self.ack_failures = 0
        self.commands_received = 0
        self.commands_rejected = 0
        self.last_error: str | None = None
        self.connected_since: float | None = None
        self.failing_since: float | None = None
        self.next_attempt_in_s: float | None = None
        if config.tls is not None and config.tls.insecure:
            log.warning("uplink_tls_insecure", broker=self._broker(), hint="no server check")

    # -- lifecycle -------------------------------------------------------------------------

    async def _start(self) -> None:
        self.spawn(self.run(), name="uplink")

    def notify(self) -> None:
        """Something was appended to the outbox: look now instead of at the next idle poll."""
        self._wake.set()

    async def run(self) -> None:
        """Connect, drain, reconnect; forever, until cancelled."""
        attempt = 0
        try:
            while True:
                self.state = "connecting"
                self.next_attempt_in_s = None
                try:
                    await self._session()
                except (aiomqtt.MqttError, OSError, UplinkError, OutboxError) as exc:
                    if self.connected_since is not None:
                        attempt = 0  # the connection was up: start the backoff again
                    self._failed(exc)
                self.connected_since = None
                delay = self._backoff(attempt)
                attempt += 1
                self.state = "backoff"
                self.next_attempt_in_s = round(delay, 3)
                await asyncio.sleep(delay)
        finally:
            self.state = "stopped"
            self.connected_since = None
            for task in self._command_tasks:
                task.cancel()

    def _backoff(self, attempt: int) -> float:
        backoff = self.config.backoff
        base = min(backoff.max_s, backoff.initial_s * (2.0 ** min(attempt, 30)))
        factor = 1.0 + backoff.jitter * (2.0 * self._rng.random() - 1.0)
        return max(0.01, base * factor)

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = _describe(exc)
        if self.failing_since is None:
            self.failing_since = self._wall()
            log.warning(
                "uplink_failing",
                broker=self._broker(),
                error=self.last_error,
                hint="logged once; see `smartpole diag uplink` for the count",
            )

    def _broker(self) -> str:
        return f"{self.config.host}:{self.config.broker_port()}"

    # -- one connection --------------------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        config = self.config
        username, password = self._credentials()
        tls_context = self._tls_context()
        tls_insecure = True if config.tls is not None and config.tls.insecure else None
        # A new number for every attempt: the will is registered with this CONNECT, and
        # the birth that follows it names the same number.
        self.session = self._sessions.next()
        will = aiomqtt.Will(
            self.topics.state,
            self._offline("connection lost"),
            qos=1,
            retain=True,
        )
        client = aiomqtt.Client(
            config.host,
            config.broker_port(),
            username=username,
            password=password,
            identifier=config.client_id or self.pole_id,
            protocol=self._protocol,
            will=will,
            timeout=config.connect_timeout_s,
            keepalive=config.keepalive_s,
            tls_context=tls_context,
            tls_insecure=tls_insecure,
            logger=self._paho_log,
            **self._session_options(),
        )
        # aiomqtt warns above 10 publishes awaiting their PUBACK; the window is ours to set.
        client.pending_calls_threshold = self._window + 4
        return client

    def _session_options(self) -> dict[str, Any]:
        """A persistent session when commands are on, so the broker keeps the commands
        sent while the pole is offline (for ``offline_queue_s``) and delivers them on the
        next connect; the command ids make a redelivery harmless."""
        keep_s = 0 if self.config.commands is None else self.config.commands.offline_queue_s
        if self._protocol is aiomqtt.ProtocolVersion.V311:
            return {"clean_session": keep_s == 0}
        if keep_s == 0:
            return {"clean_start": True}
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = keep_s
        return {"clean_start": False, "properties": properties}

    def _tls_context(self) -> ssl.SSLContext | None:
        tls = self.config.tls
        if tls is None:
            return None
        paths = {}
        for name in ("ca_file", "cert_file", "key_file"):
            path = self.config.resolve(getattr(tls, name), self._base_dir)
            if path is not None and not path.is_file():
                raise UplinkError(f"tls {name} {path} does not exist")
            paths[name] = path
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.sslsocket_class = _ClosingSSLSocket
        if tls.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif paths["ca_file"] is not None:
            context.load_verify_locations(cafile=str(paths["ca_file"]))
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if paths["cert_file"] is not None and paths["key_file"] is not None:
            context.load_cert_chain(str(paths["cert_file"]), str(paths["key_file"]))
        return context

    def _credentials(self) -> tuple[str | None, str | None]:
        """Read on every attempt, so a rotated password needs no restart; never logged."""
        values: list[str | None] = []
        for name in ("username_file", "password_file"):
            path = self.config.resolve(getattr(self.config, name), self._base_dir)
            if path is None:
                values.append(None)
                continue
            try:
                secret = read_small_file(path, SECRET_FILE_BYTES).decode("utf-8")
                values.append(secret.strip("\r\n"))
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or type(exc).__name__
                raise UplinkError(f"cannot read {name} {path}: {reason}") from None
        return values[0], values[1]

    async def _session(self) -> None:
        client = self._client()
        self._entered = False
        try:
            await self._checked_session(client)
        except BaseException:
            if not self._entered:
                await _abandon(client)
            raise

    async def _checked_session(self, client: aiomqtt.Client) -> None:
        try:
            await self._connected_session(client)
        except aiomqtt.MqttCodeError as exc:
            if _code(exc) in _WRONG_PROTOCOL and self.connected_since is None:
                self._fall_back("the broker refused MQTT 5")
            raise
        except aiomqtt.MqttError as exc:
            # Some 3.1.1-only brokers never answer an MQTT 5 CONNECT (they misparse its
            # properties and wait for bytes that never come). A CONNACK that never came,
            # before this process ever connected, is taken as that; a 5-capable broker
            # accepts 3.1.1 too, so a wrong guess costs only MQTT 5's extras.
            if str(exc) == _NO_CONNACK and self.connected_since is None and self.connects == 0:
                self._fall_back("no answer to an MQTT 5 CONNECT")
            raise

    def _fall_back(self, reason: str) -> None:
        if self._protocol is aiomqtt.ProtocolVersion.V5 and self.config.fallback_311:
            self._protocol = aiomqtt.ProtocolVersion.V311
            log.warning(
                "uplink_protocol_fallback", broker=self._broker(), protocol="3.1.1", reason=reason
            )

    async def _connected_session(self, client: aiomqtt.Client) -> None:
        async with client:
            self._entered = True
            self.connects += 1
            self.connected_since = self._wall()
            self.state = "connected"
            if self.failing_since is not None:
                log.info(
                    "uplink_recovered",
                    broker=self._broker(),
                    failures=self.failures,
                    outage_s=round(self._wall() - self.failing_since, 1),
                )
                self.failing_since = None
            elif self.connects == 1:
                log.info("uplink_connected", broker=self._broker(), protocol=self._protocol_name())
            try:
                # The description first: QoS 1 keeps the order, so a platform that sees the
                # birth has the meta its hash names.
                await client.publish(
                    self.topics.meta,
                    _dumps(self.meta.payload(self.pole_id, self._session_number(), self._wall())),
                    qos=1,
                    retain=True,
                    timeout=self.config.publish_timeout_s,
                )
                await client.publish(
                    self.topics.state,
                    self._birth(),
                    qos=1,
                    retain=True,
                    timeout=self.config.publish_timeout_s,
                )
                if self.commands is not None:
                    await client.subscribe(self.topics.command, qos=1)
                await _first_error(self._watch(client), self._drain(client))
            except asyncio.CancelledError:
                # Stopping on purpose: say so, so the platform does not wait for a timeout.
                with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                    await client.publish(
                        self.topics.state,
                        self._offline("shutdown"),
                        qos=1,
                        retain=True,
                        timeout=1.0,
                    )
                raise

    def _protocol_name(self) -> str:
        return "5" if self._protocol is aiomqtt.ProtocolVersion.V5 else "3.1.1"

    def _session_number(self) -> int:
        assert self.session is not None, "set by _client before every connect"
        return self.session

    def _birth(self) -> bytes:
        return _dumps(
            {
                "state": "online",
                "pole": self.pole_id,
                "session": self._session_number(),
                "ts": round(self._wall(), 3),
                "epoch": self.outbox.epoch,
                "agent": AGENT,
                "protocol": self._protocol_name(),
                "meta": self.meta.hash,
            }
        )

    def _offline(self, reason: str) -> bytes:
        return _dumps(
            {
                "state": "offline",
                "pole": self.pole_id,
                "session": self._session_number(),
                "reason": reason,
            }
        )

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Receive commands; ends with ``MqttError`` when the connection is lost."""
        async for message in client.messages:
            if not message.topic.matches(self.topics.command):
                continue
            raw: object = message.payload
            payload = bytes(raw) if isinstance(raw, bytes | bytearray) else str(raw).encode()
            self.commands_received += 1
            task = asyncio.create_task(self._command(payload), name="uplink:command")
            self._command_tasks.add(task)
            task.add_done_callback(self._command_tasks.discard)

    async def _command(self, payload: bytes) -> None:
        """Run one command apart from the connection, so a lost link never cuts it short."""
        assert self.commands is not None
        # The processor answers every payload, an oversized one too, in the one shape of
        # schemas/uplink/command-result.schema.json, and counts it by reason.
        result = await self.commands.handle(payload, source="mqtt")
        if result.get("status") == "rejected":
            self.commands_rejected += 1
        try:
            self.outbox.append(COMMAND_RESULT_STREAM, result, priority=Priority.HIGH)
            self.outbox.flush()
        except OutboxError:
            return  # counted and logged once by the outbox
        self.notify()

    # -- the drain -------------------------------------------------------------------------

    async def _drain(self, client: aiomqtt.Client) -> None:
        while True:
            limit = max(1, min(self._window, self._bucket.available()))
            batch = self._next_batch(limit)
            if not batch:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.idle_poll_s):
                        await self._wake.wait()
                self._refresh_streams()
                continue
            await self._bucket.take(len(batch))
            await self._publish(client, batch)

    def _refresh_streams(self) -> None:
        with contextlib.suppress(OutboxError):
            self._streams.update(self.outbox.stats())

    def _next_batch(self, limit: int) -> list[OutboxRecord]:
        for stream in sorted(self._streams, key=lambda s: (stream_rank(s), s)):
            records = self.outbox.pending(stream, limit=limit)
            if records:
                return records
        return []

    async def _publish(self, client: aiomqtt.Client, batch: list[OutboxRecord]) -> None:
        results = await asyncio.gather(
            *(self._publish_one(client, record) for record in batch), return_exceptions=True
        )
        done: OutboxRecord | None = None
        error: BaseException | None = None
        for record, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                error = result
                break
            done = record
        if done is not None:
            count = batch.index(done) + 1
            self._count_sent(count)
            try:
                self.outbox.ack(done.stream, done.seq)
                self.acked += count
            except OutboxError as exc:
                # Sent but not deleted: they go again and the platform drops the duplicates.
                self.ack_failures += 1
                self.last_error = f"outbox ack failed: {exc}"
        if error is not None:
            raise error

    async def _publish_one(self, client: aiomqtt.Client, record: OutboxRecord) -> None:
        # The stored payload is JSON already: wrap it rather than decode and encode it
        # again, which for a second of gateway telemetry is most of the uplink's CPU.
        envelope = _dumps(
            {
                "pole": self.pole_id,
                "epoch": record.epoch,
                "stream": record.stream,
                "seq": record.seq,
                "ts": record.created_at,
            }
        )
        message = b"".join((envelope[:-1], b',"data":', record.payload_json.encode(), b"}"))
        await client.publish(
            self.topics.for_stream(record.stream),
            message,
            qos=1,
            timeout=self.config.publish_timeout_s,
        )
        self.published += 1

    def _count_sent(self, count: int) -> None:
        now = self._monotonic()
        self._sent.append((now, count))
        while self._sent and self._sent[0][0] < now - RATE_WINDOW_S:
            self._sent.popleft()

    def send_rate(self) -> float:
        now = self._monotonic()
        while self._sent and self._sent[0][0] < now - RATE_WINDOW_S:
            self._sent.popleft()
        return round(sum(count for _, count in self._sent) / RATE_WINDOW_S, 2)

    # -- diagnostics -----------------------------------------------------------------------

    def session_problem(self) -> str | None:
        """For ``diag status``: session numbers that could not be persisted may repeat
        after a restart, and a platform would then pair a will with the wrong birth."""
        failures = self._sessions.write_failures
        if not failures:
            return None
        return f"uplink session file: {failures} failed writes (numbers may repeat after a restart)"

    def status(self) -> dict[str, object]:
        """``smartpole diag uplink``: connection, backlog, send rate, evictions."""
        backlog: dict[str, dict[str, object]] = {}
        oldest: float | None = None
        evictions = 0
        try:
            stats = self.outbox.stats()
        except OutboxError as exc:
            stats = {}
            backlog_error: str | None = str(exc)
        else:
            backlog_error = None
        for stream, stream_stats in stats.items():
            entry = {k: v for k, v in dict(stream_stats).items()}
            backlog[stream] = entry
            age = stream_stats.get("oldest_age_s")
            if isinstance(age, int | float):
                oldest = age if oldest is None else max(oldest, age)
            for key, value in entry.items():
                if "evict" in key and isinstance(value, int) and not isinstance(value, bool):
                    evictions += value
        return {
            "state": self.state,
            "broker": self._broker(),
            "protocol": self._protocol_name(),
            "tls": self.config.tls is not None,
            "client_id": self.config.client_id or self.pole_id,
            "session": self.session,
            "session_write_failures": self._sessions.write_failures,
            "meta": self.meta.hash,
            "connected_since": self.connected_since,
            "failing_since": self.failing_since,
            "next_attempt_in_s": self.next_attempt_in_s,
            "connects": self.connects,
            "failures": self.failures,
            "last_error": self.last_error,
            "published": self.published,
            "acked": self.acked,
            "ack_failures": self.ack_failures,
            "send_rate_per_s": self.send_rate(),
            "replay_rate_per_s": self.config.replay_rate_per_s,
            "backlog": backlog,
            "backlog_total": sum(int(str(s.get("count", 0))) for s in backlog.values()),
            "backlog_error": backlog_error,
            "oldest_age_s": None if oldest is None else round(oldest, 1),
            "evictions": evictions,
            "outbox_append_failures": self.outbox.append_failures,
            "commands": {
                "enabled": self.commands is not None,
                "received": self.commands_received,
                "rejected": self.commands_rejected,
                # Every answer by reason (rejections included), from the processor that
                # MQTT and OPC UA commands share.
                **(self.commands.stats() if self.commands is not None else {}),
            },
        }


async def _abandon(client: aiomqtt.Client) -> None:
    """Let go of a connect that failed before it was up.

    aiomqtt (2.5) leaves a CONNECT that got no CONNACK with its socket open and its
    housekeeping task running, and offers no public way to drop them: against a broker that
    never answers, every attempt would leak a socket and a task. So this reaches into it:
    closing paho's socket runs aiomqtt's own close callback (the socket's reader goes, its
    task is cancelled), and the task is awaited here.
    """
    paho = client._client
    with contextlib.suppress(Exception):
        paho._sock_close()
    task: asyncio.Task[None] | None = getattr(client, "_misc_task", None)
    if task is not None and not task.done():
        task.cancel()
        await asyncio.wait({task})


async def _first_error(*coroutines: Any) -> None:
    """Run ``coroutines`` together; the first to fail cancels the rest and its error raises."""
    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in coroutines:
                group.create_task(coroutine)
    except BaseExceptionGroup as group_error:
        for exc in group_error.exceptions:
            if not isinstance(exc, asyncio.CancelledError):
                raise exc from None
        raise
    raise aiomqtt.MqttError("the uplink session ended")


def _code(exc: aiomqtt.MqttCodeError) -> int | None:
    rc = exc.rc
    if rc is None:
        return None
    return rc if isinstance(rc, int) else int(rc.value)


def _describe(exc: BaseException) -> str:
    """One line for the log and `diag uplink`: what failed, never a secret."""
    cause = exc.__cause__ or exc.__context__
    text = str(exc) or type(exc).__name__
    if isinstance(exc, aiomqtt.MqttError) and isinstance(cause, ssl.SSLError):
        text = f"TLS: {cause}"
    elif "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        text = f"TLS: {text}"
    return text


def _dumps(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
