"""The pole as an OPC UA server (asyncua), for SCADA clients on the city's network.

Address space (namespace ``config.namespace``)::

    Objects/<pole_id>/                      object, NodeId s=<pole_id>
        <device>/                           one object per device, NodeId s=<device>
            <point>                         one variable per point, NodeId s=<device>.<point>
                EngineeringUnits            EUInformation, UNECE code (points with a unit)
                EURange                     Range (numeric points whose profile gives one)
        Commands/                           SetLevel, Relay, PowerCycle, PtzPreset, AckAlarm
                                            (opcua_methods.py)

Values come from the point table's listener, coalesced per point and written by one task, and
only when the value or its quality changed (report by exception: the source timestamp is the
acquisition time of the change). A periodic pass over the table's snapshot catches qualities
that change without a new reading (stale). ``opcua_space`` maps quality to status codes.

Alarms are polled from ``alarms`` (``AlarmManager.active()``, or a callable returning alarm
dicts); each is an ``AlarmConditionType`` condition with Acknowledge and ConditionRefresh, and
each transition (raised, acknowledged, cleared) is also fired as a ``PoleAlarmEventType``
event, both from the Server object (``opcua_alarms``).

Security: only Basic256Sha256 (Sign and/or SignAndEncrypt); there is never a None endpoint,
not even for anonymous reading, because the trust list is what keeps unknown machines out and
it needs the client's certificate on a secure channel. Anonymous sessions, when allowed, are
read-only (browse, read, subscribe, ConditionRefresh); writes and method calls need a user
from the users file, and failed logins are throttled (``opcua_throttle``). Variables are
read-only anyway: commands go through the methods, which hand them to the command processor's
``submit`` with the user as the actor, ``opcua`` as the source and an ``opcua-<n>`` id, and
report each answer on the ``cmd/result`` stream (``opcua_calls``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import structlog
from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError

from smartpole.agent.config.opcua import OpcUaConfig
from smartpole.agent.core.points import PointTable, Quality
from smartpole.agent.uplink.opcua_alarms import AlarmConditions
from smartpole.agent.uplink.opcua_auth import PeerAwareInternalServer, PoleRuleset, UserFileManager
from smartpole.agent.uplink.opcua_calls import FILE_NAME as CALL_IDS_FILE
from smartpole.agent.uplink.opcua_calls import CallIds, Report
from smartpole.agent.uplink.opcua_certs import TrustList, ensure_server_certificate
from smartpole.agent.uplink.opcua_methods import CommandCallback, CommandMethods, Outcome
from smartpole.agent.uplink.opcua_space import data_value, eu_information, eu_range, nid
from smartpole.agent.uplink.opcua_space import variant_type_for as _vtype
from smartpole.agent.uplink.opcua_throttle import LoginThrottle
from smartpole.drivers.lifecycle import Lifecycle
from smartpole.drivers.schema import Value

log = structlog.get_logger("smartpole.uplink.opcua")

AlarmDicts = Callable[[], Iterable[Mapping[str, Any]]]
_Key = tuple[str, str]
_V = ua.VariantType


class ActiveAlarms(Protocol):
    def active(self) -> Iterable[Any]: ...


def application_uri(pole_id: str) -> str:
    return f"urn:smartpole:{pole_id}:opcua"


_MODES = {
    "Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}


def _alarm_dicts(source: ActiveAlarms | AlarmDicts) -> dict[str, dict[str, Any]]:
    raw = source.active() if hasattr(source, "active") else source()
    out: dict[str, dict[str, Any]] = {}
    for alarm in raw:
        as_dict = dict(alarm.to_json() if hasattr(alarm, "to_json") else alarm)
        out[str(as_dict.get("alarm_id"))] = as_dict
    return out


class OpcUaServer(Lifecycle):
    """``async with OpcUaServer(...) as server:`` serves until the block ends."""

    def __init__(
        self,
        config: OpcUaConfig,
        *,
        pole_id: str,
        table: PointTable,
        state_dir: Path,
        units: Mapping[_Key, str] | None = None,
        ranges: Mapping[_Key, tuple[float, float]] | None = None,
        alarms: ActiveAlarms | AlarmDicts | None = None,
        command: CommandCallback | None = None,
        report: Report | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` (monotonic seconds) times the login throttle's windows."""
        super().__init__()
        self.config = config
        self.pole_id = pole_id
        self.table = table
        self.state_dir = state_dir
        self.units = dict(units or {})
        self.ranges = dict(ranges or {})
        self.alarms = alarms
        self.command = command
        self.application_uri = application_uri(pole_id)
        self.trust = TrustList(
            config.path(state_dir, config.trust_dir),
            config.path(state_dir, config.rejected_dir),
            keep=config.rejected_keep,
        )
        users = config.path(state_dir, config.users_file) if config.users_file else None
        self.throttle = LoginThrottle(
            free_failures=config.login_free_failures,
            base_s=config.login_backoff_s,
            max_s=config.login_backoff_max_s,
            clock=clock,
        )
        self.users = UserFileManager(
            users,
            allow_anonymous=config.allow_anonymous_read,
            trusted=self.trust.is_trusted,
            throttle=self.throttle,
        )
        iserver = PeerAwareInternalServer(user_manager=self.users)
        # asyncua's ConditionRefresh (and RefreshStart/End events, of this severity).
        iserver.bind_condition_methods = 1
        self.server = Server(iserver=iserver)
        self.idx = 0
        self._nodes: dict[_Key, tuple[ua.NodeId, ua.VariantType]] = {}
        self._last: dict[_Key, tuple[Value | None, Quality]] = {}
        self._pending: dict[_Key, tuple[Value | None, Quality, float | None]] = {}
        self._wake = asyncio.Event()
        self._running = False
        self._write_failed: set[_Key] = set()
        self.methods = CommandMethods(
            command,
            CallIds(state_dir / CALL_IDS_FILE),
            timeout_s=config.method_timeout_s,
            report=report,
        )
        self.conditions: AlarmConditions | None = None

    def accept_commands(self, command: CommandCallback, report: Report | None = None) -> None:
        """Where the command methods go (the command processor), and where their answers
        are reported (the ``cmd/result`` stream); before the server starts."""
        self.command = command
        self.methods.command = command
        self.methods.report = report

    async def _start(self) -> None:
        server, config = self.server, self.config
        await server.init()
        server.set_endpoint(config.endpoint)
        server.set_server_name(f"smartpole {self.pole_id}")
        server.product_uri = "urn:smartpole"
        await server.set_application_uri(self.application_uri)
        self.trust.prepare()
        pair = ensure_server_certificate(
            config.path(self.state_dir, config.certificate_dir), self.application_uri, self.pole_id
        )
        await server.load_certificate(pair.certificate)
        await server.load_private_key(pair.private_key)
        ruleset = PoleRuleset(allow_anonymous=config.allow_anonymous_read)
        modes = [_MODES[m] for m in config.security_modes]
        server.set_security_policy(modes, ruleset)  # type: ignore[arg-type]
        tokens: list[type] = [ua.UserNameIdentityToken]
        if config.allow_anonymous_read:
            tokens.append(ua.AnonymousIdentityToken)
        server.set_identity_tokens(tokens)
        server.set_certificate_validator(self.trust)
        self.idx = await server.register_namespace(config.namespace)
        await self._build()
        await server.start()
        self._running = True
        self.table.listen(self._on_reading)
        self.spawn(self._flush_loop(), name="opcua-flush")
        self.spawn(self._refresh_loop(), name="opcua-refresh")
        if self.alarms is not None and self.conditions is not None:
            await self.conditions.start(_alarm_dicts(self.alarms))
            self.spawn(self._alarm_loop(), name="opcua-alarms")
        log.info(
            "opcua_started",
            endpoint=config.endpoint,
            points=len(self._nodes),
            anonymous_read=config.allow_anonymous_read,
            trust_dir=str(self.trust.directory),
            rejected_dir=str(self.trust.rejected_dir),
        )

    def _release(self) -> None:
        self._running = False  # the table keeps the listener; it does nothing from now on

    async def _stopped(self) -> None:
        await self.methods.close()
        await self.server.stop()
        log.info("opcua_stopped")

    # -- address space ----------------------------------------------------------------------

    async def _build(self) -> None:
        idx = self.idx
        objects = self.server.nodes.objects
        pole = await objects.add_object(nid(self.pole_id, idx), ua.QualifiedName(self.pole_id, idx))
        devices: dict[str, Node] = {}
        for sample in self.table.snapshot():
            key = (sample.device, sample.point)
            device = devices.get(sample.device)
            if device is None:
                device = await pole.add_object(
                    nid(sample.device, idx), ua.QualifiedName(sample.device, idx)
                )
                devices[sample.device] = device
            vtype = _vtype(sample.value)
            node = await device.add_variable(
                nid(f"{sample.device}.{sample.point}", idx),
                ua.QualifiedName(sample.point, idx),
                ua.Variant(False if vtype is _V.Boolean else ("" if vtype is _V.String else 0.0)),
                vtype,
            )
            await self._describe(node, key, self.units.get(key, sample.unit), vtype)
            self._nodes[key] = (node.nodeid, vtype)
            await self._write(key, sample.value, sample.quality, sample.timestamp)
        commands = await pole.add_object(nid("Commands", idx), ua.QualifiedName("Commands", idx))
        await self.methods.add_to(commands, idx)
        self.conditions = AlarmConditions(self.server, idx, self._acknowledge)
        await self.conditions.setup(pole, devices, self.poll_alarms)

    async def _describe(self, node: Node, key: _Key, unit: str, vtype: ua.VariantType) -> None:
        """The Part 8 properties of a point: EngineeringUnits when it has a unit, EURange
        when its profile gives a valid range (numbers only)."""
        path = f"{key[0]}.{key[1]}"
        units = eu_information(unit)
        if units is not None:
            if units.UnitId == -1:
                log.warning("opcua_unit_without_unece_code", device=key[0], point=key[1],
                            unit=units.DisplayName.Text)  # fmt: skip
            await node.add_property(
                nid(f"{path}.EngineeringUnits", self.idx),
                ua.QualifiedName("EngineeringUnits", 0),
                ua.Variant(units, _V.ExtensionObject),
                datatype=nid(ObjectIds.EUInformation),
            )
        span = eu_range(self.ranges.get(key)) if vtype is _V.Double else None
        if span is not None:
            await node.add_property(
                nid(f"{path}.EURange", self.idx),
                ua.QualifiedName("EURange", 0),
                ua.Variant(span, _V.ExtensionObject),
                datatype=nid(ObjectIds.Range),
            )

    async def _acknowledge(self, alarm_id: str, user: str) -> Outcome:
        return await self.methods.run("ack_alarm", {"alarm_id": alarm_id}, user)

    async def _write(
        self, key: _Key, value: Value | None, quality: Quality, at: float | None
    ) -> None:
        self._last[key] = (value, quality)
        nodeid, vtype = self._nodes[key]
        dv = data_value(value, quality, at, vtype)
        await self.server.write_attribute_value(nodeid, dv)
        mismatch = dv.StatusCode is not None and dv.StatusCode.value == StatusCodes.BadTypeMismatch
        if mismatch and key not in self._write_failed:
            self._write_failed.add(key)
            log.warning("opcua_value_type_mismatch", device=key[0], point=key[1], type=vtype.name)

    # -- values -----------------------------------------------------------------------------

    def _on_reading(
        self, device: str, point: str, value: Value | None, quality: Quality, at: float
    ) -> None:
        key = (device, point)
        if not self._running or key not in self._nodes:
            return
        if self._last.get(key) == (value, quality) and key not in self._pending:
            return
        self._pending[key] = (value, quality, at)
        self._wake.set()

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending, self._pending = self._pending, {}
            for key, (value, quality, at) in pending.items():
                if self._last.get(key) != (value, quality):
                    await self._write(key, value, quality, at)

    def reconcile(self) -> None:
        """Queue every point whose quality or value differs from what clients see."""
        for sample in self.table.snapshot():
            key = (sample.device, sample.point)
            if key in self._nodes and self._last.get(key) != (sample.value, sample.quality):
                self._pending[key] = (sample.value, sample.quality, sample.timestamp)
                self._wake.set()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.refresh_s)
            self.reconcile()
            self.throttle.sweep()  # ends (and logs the end of) throttling episodes gone quiet

    # -- alarms -----------------------------------------------------------------------------

    async def _alarm_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.alarm_poll_s)
            try:
                await self.poll_alarms()
            except (AttributeError, TypeError, ValueError, UaError) as exc:
                log.warning("opcua_alarm_poll_failed", error=str(exc))

    async def poll_alarms(self) -> int:
        """Fire the events and conditions of each alarm raised, acknowledged or cleared since
        the last poll; how many transitions."""
        if self.alarms is None or self.conditions is None:
            return 0
        return await self.conditions.sync(_alarm_dicts(self.alarms))

    # -- diagnostics ------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        """For ``smartpole diag uplink`` (under ``opcua``)."""
        self.throttle.sweep()
        return {
            "endpoint": self.config.endpoint,
            "running": self._running,
            "points": len(self._nodes),
            "logins_denied": self.users.denied,
            **self.throttle.status(),
            "certificates_rejected": self.trust.rejected,
            "rejected_certificates_kept": self.trust.rejected_kept,
            "rejected_certificates_not_kept": self.trust.rejected_not_kept,
            "methods_called": self.methods.called,
            "methods_running": self.methods.running,
            "call_id_write_failures": self.methods.ids.write_failures,
            **(self.conditions.status() if self.conditions is not None else {}),
        }
