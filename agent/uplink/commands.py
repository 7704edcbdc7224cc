"""Commands from the platform (MQTT) and from OPC UA clients: checked, run once, audited.

Both uplinks hand every command to one ``CommandProcessor`` and publish what it returns, so
a command means the same thing whichever way it came and is checked the same way. The
processor never raises for bad input: a broker (or an attacker) can send anything, and each
outcome must be a clear answer the platform can show, a counter ``smartpole diag uplink``
can report, and an audit record.

Checks, cheapest and least trusting first: size, JSON, schema (types, known command,
argument shape), signature, allow-list, duplicate id, timestamp window, then the command
runs. A known id is answered "duplicate" *before* the timestamp window is applied: a broker
redelivery after an hour offline gets the first answer again (it is not a new command and
runs nothing), which is more useful to the platform than "stale". An unknown id outside the
window is refused. The profile's limits (read-only points, ranges) are checked by the bus
tasks and come back as ``WriteRejectedError``, answered "rejected".

Time: the window is the one calendar decision here (``issued_at`` is the platform's wall
clock); how long an id is remembered runs on both clocks (``command_store.py``), so a
stepped wall clock can neither make the window accept a replay nor age the ids out.

A rejected or duplicate command proves nothing about who sent it: it is audited as
``unauthenticated`` with the actor it claimed, and rate-limited (``command_rejections.py``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError

from smartpole.agent.config.commands import CommandsConfig
from smartpole.agent.control.power import PowerRefusedError
from smartpole.agent.core.audit import AuditLog, AuditRecord
from smartpole.agent.core.clock import SYSTEM_CLOCK, Clock
from smartpole.agent.core.errors import AgentError, RequestError, UsageError
from smartpole.agent.uplink import command_schema as schema
from smartpole.agent.uplink.command_answers import STATUS_OF, answer, id_of, jsonable, target
from smartpole.agent.uplink.command_auth import KeyRing, KeyUnavailableError, allowed
from smartpole.agent.uplink.command_executor import CommandExecutor
from smartpole.agent.uplink.command_rejections import (
    UNAUTHENTICATED,
    RejectionAudit,
    claimed_actor,
)
from smartpole.agent.uplink.command_schema import CommandError, Envelope
from smartpole.agent.uplink.command_store import STORE_FILE, CacheFullError, CommandStore
from smartpole.drivers.errors import DriverError, WriteRejectedError

log = structlog.get_logger("smartpole.commands")

__all__ = ["CommandProcessor", "answer"]

# Raised before anything was switched: the command was refused, with the reason.
_REFUSALS = (WriteRejectedError, PowerRefusedError, RequestError, UsageError)


class CommandProcessor:
    def __init__(
        self,
        config: CommandsConfig,
        executor: CommandExecutor,
        audit: AuditLog,
        state_dir: Path,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.config = config
        self._executor = executor
        self._audit = audit
        self._clock = clock
        self._key = (
            KeyRing(config.hmac_key_file, config.previous_hmac_key_file)
            if config.hmac_key_file is not None
            else None
        )
        self._store = CommandStore(
            state_dir / STORE_FILE, config.dedupe_keep_s, config.max_remembered, clock
        )
        self._rejections = RejectionAudit(
            audit, config.rejections_audited_per_s, config.rejections_audited_burst, clock
        )
        self._running: dict[str, asyncio.Future[dict[str, object]]] = {}
        self.counters: Counter[str] = Counter()
        if self._key is None and config.allow:
            log.warning(
                "commands_unsigned",
                hint="without uplink.commands.hmac_key_file the actor in a command is not "
                "authenticated; rely on broker ACLs for the command topic",
            )

    def stats(self) -> dict[str, object]:
        """For ``smartpole diag uplink``."""
        by_status: Counter[str] = Counter()
        for reason, count in self.counters.items():
            if reason in STATUS_OF:
                by_status[STATUS_OF[reason]] += count
        return {
            "by_status": dict(by_status),
            "by_reason": dict(self.counters),
            "remembered_ids": len(self._store),
            "running": len(self._running),
            "store_write_failures": self._store.write_failures,
            "store_quarantined": self._store.quarantined,
            "ids_refused_cache_full": self._store.refused_full,
            "rejections_not_audited": self._rejections.not_audited,
            "rejection_throttling_episodes": self._rejections.episodes,
            "key": None if self._key is None else self._key.stats(),
        }

    async def handle(
        self, payload: bytes | bytearray | memoryview | str, *, source: str
    ) -> dict[str, object]:
        """Check and run one command payload from ``source`` ("mqtt", "opcua"); never raises
        for bad input. Answers concurrent redeliveries of one id with the first's answer."""
        try:
            raw = payload.encode() if isinstance(payload, str) else bytes(payload)
            return await self._handle(raw, source)
        except Exception as exc:  # a bug here must not take the uplink down with it
            log.exception("command_internal_error", source=source)
            return self._count(answer(None, "internal_error", f"internal error: {exc}"))

    async def submit(
        self,
        command: str,
        args: Mapping[str, object],
        *,
        actor: str,
        source: str,
        command_id: str | None = None,
    ) -> dict[str, object]:
        """A command from a transport that authenticated its user itself (an OPC UA session):
        no signature or timestamp, but the same schema, allow-list, dedupe, audit."""
        data = {"id": command_id or uuid.uuid4().hex, "issued_at": self._clock.time(),
                "actor": actor, "command": command, "args": dict(args)}  # fmt: skip
        try:
            envelope = schema.parse_envelope(data)
            parsed = schema.parse_args(envelope.command, envelope.args)
        except CommandError as exc:  # the session authenticated the user: not a claim
            return self._refuse(id_of(data), None, exc, source=source, actor=f"{source}:{actor}")
        except Exception as exc:  # e.g. args that are not JSON-like at all
            log.exception("command_internal_error", source=source)
            return self._count(answer(id_of(data), "internal_error", f"internal error: {exc}"))
        return await self._authorised(envelope, parsed, source, check_time=False, data=None)

    async def _handle(self, payload: bytes, source: str) -> dict[str, object]:
        command_id: str | None = None
        data: dict[str, Any] | None = None
        envelope: Envelope | None = None  # once known, bad arguments name their command
        try:
            if len(payload) > self.config.max_payload_bytes:
                raise CommandError(
                    "too_large",
                    f"payload of {len(payload)} bytes exceeds {self.config.max_payload_bytes}",
                )
            data = schema.parse_json(payload)
            command_id = id_of(data)
            envelope = schema.parse_envelope(data)
            parsed = schema.parse_args(envelope.command, envelope.args)
        except CommandError as exc:
            return self._refuse(command_id, envelope, exc, source=source, data=data)
        return await self._authorised(envelope, parsed, source, check_time=True, data=data)

    async def _authorised(
        self,
        envelope: Envelope,
        args: BaseModel,
        source: str,
        *,
        check_time: bool,
        data: dict[str, Any] | None,
    ) -> dict[str, object]:
        actor = f"{source}:{envelope.actor}"
        signed = False
        try:
            if data is not None:
                signed = self._check_signature(envelope, data)
            if not allowed(self.config.allow, envelope.actor, envelope.command):
                raise CommandError(
                    "not_allowed", f"{envelope.actor} may not send {envelope.command}"
                )
            first = await self._first_answer(envelope.id)
            if first is not None:
                # A copy proves nothing about who sends it now (a replay is a copy too).
                return self._duplicate(envelope, args, actor, first, trusted=data is None)
            if check_time:
                self._check_window(envelope.issued_at, self._clock.time())
            self._begin(envelope.id, envelope.issued_at)
        except CommandError as exc:
            # Authenticated: an OPC UA session's user, or a good signature inside the window.
            trusted = data is None or (signed and self._in_window(envelope.issued_at))
            return self._refuse(envelope.id, envelope, exc, source=source, args=args,
                                actor=actor if trusted else None, data=data)  # fmt: skip
        return await self._run(envelope, args, actor)

    def _begin(self, command_id: str, issued_at: float) -> None:
        """Remember the id before the command runs (the only place ids are pruned)."""
        try:
            if not self._store.begin(command_id, issued_at):
                self.counters["store_write_failed"] += 1  # dedupe works until a restart
        except CacheFullError as exc:
            raise CommandError("replay_cache_full", str(exc)) from exc

    def _check_signature(self, envelope: Envelope, data: dict[str, Any]) -> bool:
        """True when a key vouched for the payload; raises CommandError if it does not."""
        if self._key is None:
            return False  # no key configured: a signature, if sent, cannot be checked
        if envelope.signature is None:
            raise CommandError("missing_signature", "this pole accepts signed commands only")
        try:
            good = self._key.check(schema.canonical_json(data), envelope.signature) is not None
        except KeyUnavailableError as exc:
            raise CommandError(
                "key_unavailable", "the pole cannot check signatures now (its key file "
                "is missing or unreadable); no command is accepted until it is fixed",
            ) from exc  # fmt: skip
        if not good:
            raise CommandError("bad_signature", "signature does not match the payload")
        return True

    def _in_window(self, issued_at: float) -> bool:
        return abs(self._clock.time() - issued_at) <= self.config.max_skew_s

    def _check_window(self, issued_at: float, now: float) -> None:
        forgotten = self._store.forgotten_until
        if forgotten is not None and issued_at <= forgotten:
            raise CommandError(
                "stale", "issued no later than a command whose id this pole has forgotten "
                "(it may be a replay; the pole clock may have been set back)",
            )  # fmt: skip
        skew = self.config.max_skew_s
        if now - issued_at > skew:
            raise CommandError(
                "stale", f"issued {now - issued_at:.0f} s ago, more than the {skew:g} s allowed"
            )
        if issued_at - now > skew:
            raise CommandError(
                "future", f"issued {issued_at - now:.0f} s in the future (pole clock or replay)"
            )

    async def _first_answer(self, command_id: str) -> dict[str, object] | None:
        running = self._running.get(command_id)
        if running is not None:
            return await asyncio.shield(running)
        seen = self._store.get(command_id)
        if seen is None:
            return None
        if seen.result is None:
            return answer(
                command_id,
                "failed",
                "the agent stopped while this command was running; its outcome is unknown "
                "(check the state, then send a new command with a new id)",
            )
        return seen.result

    def _duplicate(
        self,
        envelope: Envelope,
        args: BaseModel,
        actor: str,
        first: dict[str, object],
        *,
        trusted: bool,
    ) -> dict[str, object]:
        error = f"command {envelope.id} was received before; not run again"
        result = answer(envelope.id, "duplicate", error, first.get("result"),
                        command=envelope.command)  # fmt: skip
        result["first"] = {key: first.get(key) for key in ("status", "reason", "error")}
        if self._rejections.admit(str(result["reason"]), actor):
            log.info("command_duplicate", id=envelope.id, claimed_actor=actor)
            self._record(actor if trusted else UNAUTHENTICATED, envelope.command, args, result,
                         claimed=None if trusted else actor)  # fmt: skip
        return self._count(result)

    async def _run(self, envelope: Envelope, args: BaseModel, actor: str) -> dict[str, object]:
        future: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self._running[envelope.id] = future
        try:
            result = await self._execute(envelope.command, args, actor)
            result["id"], result["command"] = envelope.id, envelope.command
            if not self._store.finish(envelope.id, result):
                self.counters["store_write_failed"] += 1
            future.set_result(result)
        finally:
            del self._running[envelope.id]
            if not future.done():  # cancelled: concurrent duplicates get "outcome unknown"
                future.set_result(answer(envelope.id, "failed", "cancelled while running"))
        self._record(actor, envelope.command, args, result)
        log.info("command_done", id=envelope.id, command=envelope.command, actor=actor,
                 status=result["status"], error=result["error"])  # fmt: skip
        return self._count(result)

    async def _execute(self, command: str, args: BaseModel, actor: str) -> dict[str, object]:
        try:
            value = await self._dispatch(args, actor)
        except _REFUSALS as exc:
            return answer(None, "refused", str(exc) or type(exc).__name__)
        except (DriverError, TimeoutError) as exc:
            return answer(None, "device_error", str(exc) or type(exc).__name__)
        except (AgentError, ValidationError) as exc:
            return answer(None, "failed", str(exc) or type(exc).__name__)
        except Exception as exc:  # a bug in a handler: answered, logged, the uplink lives on
            log.exception("command_handler_failed", command=command)
            return answer(None, "internal_error", f"internal error in {command}: {exc}")
        return answer(None, "ok", None, jsonable(value))

    async def _dispatch(self, args: BaseModel, actor: str) -> object:
        run = self._executor
        match args:
            case schema.SetLevelArgs(lamp=lamp, level=level, point=point, duration_s=hold):
                return await run.set_level(lamp, level, actor, point=point, duration_s=hold)
            case schema.OverrideArgs(lamp=lamp, level=level, duration_s=duration_s):
                return await run.override(lamp, level, duration_s, actor)
            case schema.LampArgs(lamp=lamp):
                return await run.clear_override(lamp, actor)
            case schema.RelayArgs(device=device, point=point, on=on):
                return await run.relay(device, point, on, actor)
            case schema.DeviceArgs(device=device):
                return await run.power_cycle(device, actor)
            case schema.PtzArgs(device=device, preset=preset):
                return await run.ptz(device, preset, actor)
            case schema.AlarmArgs(alarm_id=alarm_id):
                return await run.reset_alarm(alarm_id, actor)
            case schema.NoArgs():
                return await run.report_now(actor)
        raise AssertionError(f"no dispatch for {type(args).__name__}")  # pragma: no cover

    def _refuse(
        self,
        command_id: str | None,
        envelope: Envelope | None,
        exc: CommandError,
        *,
        source: str,
        args: BaseModel | None = None,
        actor: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> dict[str, object]:
        """Answer a rejection; audit it under ``actor`` if authenticated, else as
        ``unauthenticated`` with the actor the payload claimed (rate-limited either way)."""
        command = envelope.command if envelope is not None else None
        result = answer(command_id, exc.reason, str(exc), command=command)
        claimed = actor or claimed_actor(source, data)
        if self._rejections.admit(exc.reason, claimed):
            log.warning("command_rejected", id=command_id, source=source, reason=exc.reason,
                        error=str(exc), claimed_actor=claimed,
                        authenticated=actor is not None)  # fmt: skip
            self._record(
                actor or UNAUTHENTICATED,
                command or "unknown",
                args,
                result,
                claimed=None if actor is not None else claimed,
            )
        return self._count(result)

    def _record(
        self,
        actor: str,
        command: str,
        args: BaseModel | None,
        result: dict[str, object],
        *,
        claimed: str | None = None,
    ) -> None:
        error = result["error"]
        self._audit.record(
            AuditRecord(
                actor,
                command,
                target(command, args) if args is not None else "",
                args.model_dump(exclude_none=True) if args is not None else None,
                ok=result["status"] == "ok",
                read_back=result["result"],
                error=None if error is None else f"{result['reason']}: {error}",
                claimed_actor=claimed,
                command_id=None if result["id"] is None else str(result["id"]),
            )
        )

    def _count(self, result: dict[str, object]) -> dict[str, object]:
        self.counters[str(result["reason"])] += 1
        return result
