"""``smartpole diag bundle`` against a real daemon polling simulated devices, and without one.

The archive is read as whoever receives it would: Python's ``tarfile`` and the ``tar``
command. What is checked: every member the bundle promises is there and parses, the
archive and its members are 0600, and none of the pole's secrets is anywhere in it (the
MQTT user name and password, the HMAC command key, the TLS client's private key, the
password in a URL), neither as written nor base64 nor hex. The daemon-less bundle says in
its manifest which ``diag`` views it could not ask, and why.
"""

from __future__ import annotations

import base64
import json
import secrets
import stat
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from helpers.broker import make_certs
from helpers.paths import PROFILES
from helpers.ports import free_port
from helpers.processes import SMARTPOLE, Proc, api, bus_ports
from helpers.waiting import wait_until
from smartpole.agent.core.health import LEARNT_KEY

POLE = "bundle-pole"
MQTT_USER = "pole-user-8c41d2"
MQTT_PASSWORD = "Mqtt-Pw/7f3a+9c1e=x"  # noqa: S105 (characters base64 and URLs escape)
CAMERA_PASSWORD = "Cam-Pa55-w0rd-q8z"  # noqa: S105
PORTAL_PASSWORD = "Portal-Secret-51b7"  # noqa: S105
VIEWS = ("status", "points", "plan", "alarms", "lights", "mcu", "uplink", "cameras", "audit")


def _pole(tmp_path: Path, *, camera: bool = False) -> tuple[Path, list[bytes]]:
    """A pole with every kind of secret the config can lead to; the secrets' values."""
    vault = tmp_path / "secrets"
    vault.mkdir(mode=0o700)
    hmac_key = secrets.token_hex(32).encode()
    for name, data in {
        "mqtt-user": MQTT_USER.encode() + b"\n",
        "mqtt-password": MQTT_PASSWORD.encode() + b"\n",
        "pole.key": hmac_key + b"\n",
    }.items():
        (vault / name).write_bytes(data)
        (vault / name).chmod(0o600)
    certs = make_certs(tmp_path / "tls")  # the client key outside secrets/: named, not swept
    data: dict[str, Any] = {
        "pole": {"id": POLE},
        "profiles_dir": str(PROFILES),
        "buses": {
            "rs485-1": {"type": "modbus-rtu", "port": "/dev/null", "timeout_s": 0.3},
            "cabinet-mcu": {"type": "pole-mcu", "port": "/dev/null", "heartbeat_s": 0.2},
        },
        "devices": {
            "weather": {
                "profile": "cwt-uwd",
                "bus": "rs485-1",
                "unit_id": 1,
                "poll_period_s": 0.2,
                "description": f"portal https://tech:{PORTAL_PASSWORD}@10.0.0.5/pole",
            },
            "lamp1": {"profile": "lamp-controller", "bus": "rs485-1", "unit_id": 4},
            "mcu": {"profile": "pole-mcu", "bus": "cabinet-mcu"},
        },
        "site": {"latitude": 23.13, "longitude": 113.26, "timezone": "Asia/Shanghai"},
        "lighting": {
            "programs": {
                "flat": {
                    "default": "on",
                    "profiles": {"on": [{"at": "12:00", "level": 50}, {"at": "11:59", "level": 0}]},
                }
            },
            "assignments": {"lamp1": "flat"},
        },
        "uplink": {
            "host": "127.0.0.1",
            "port": free_port(),  # no broker: the uplink retries, its view says so
            "tls": {
                "ca_file": str(certs.ca),
                "cert_file": str(certs.client_cert),
                "key_file": str(certs.client_key),
            },
            "username_file": "secrets/mqtt-user",
            "password_file": "secrets/mqtt-password",
            "commands": {"hmac_key_file": "secrets/pole.key"},
        },
    }
    known = [MQTT_USER.encode(), MQTT_PASSWORD.encode(), hmac_key, PORTAL_PASSWORD.encode()]
    if camera:
        (tmp_path / "model.onnx").write_bytes(b"not a model")
        data["cameras"] = {
            "street": {
                "source": f"rtsp://viewer:{CAMERA_PASSWORD}@192.0.2.10:554/stream1",
                "model": "model.onnx",
                "lines": {"road": {"from": [0, 100], "to": [640, 100]}},
            }
        }
        known.append(CAMERA_PASSWORD.encode())
    pem = certs.client_key.read_bytes()
    body = [line for line in pem.splitlines() if line and not line.startswith(b"-----")]
    known += [pem.strip(), *body, base64.b64decode(b"".join(body))]
    config = tmp_path / "pole.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config, known


def _forms(secret: bytes) -> Iterator[bytes]:
    """The secret as written, base64 and hex: how a secret would be found in a member."""
    yield secret
    yield base64.b64encode(secret).rstrip(b"=")
    yield base64.urlsafe_b64encode(secret).rstrip(b"=")
    yield secret.hex().encode()
    yield secret.hex().upper().encode()


def _bundle(tmp_path: Path, config: Path, state: Path, name: str) -> Path:
    out = tmp_path / name
    done = subprocess.run(
        [*SMARTPOLE, "diag", "bundle", "--config", str(config), "--state-dir", str(state),
         "-o", str(out), "--journal-lines", "50"],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    assert f"wrote {out}" in done.stdout
    return out


def _members(archive: Path) -> dict[str, bytes]:
    """Every member by its name inside the bundle's folder, checked to be 0600 files."""
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    listed = subprocess.run(
        ["tar", "-tvzf", str(archive)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert listed
    assert all(line.startswith("-rw-------") for line in listed), listed
    members: dict[str, bytes] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for info in tar.getmembers():
            assert info.isfile(), info.name
            assert info.mode == 0o600, info.name
            folder, _, name = info.name.partition("/")
            assert folder.startswith(f"smartpole-bundle-{POLE}-"), info.name
            extracted = tar.extractfile(info)
            assert extracted is not None
            members[name] = extracted.read()
    assert len(listed) == len(members)
    return members


def _assert_no_secret(archive: Path, members: dict[str, bytes], known: list[bytes]) -> None:
    raw = subprocess.run(["gzip", "-dc", str(archive)], capture_output=True, check=True).stdout
    for secret in known:
        for form in _forms(secret):
            assert form not in raw, f"a secret ({len(secret)} bytes) is in the archive"
            leaking = [name for name, data in members.items() if form in data]
            assert not leaking, f"a secret ({len(secret)} bytes) is in {leaking}"
    assert not [name for name in members if "secrets" in name]


def _json_members(members: dict[str, bytes]) -> dict[str, Any]:
    return {name: json.loads(data) for name, data in members.items() if name.endswith(".json")}


def test_the_bundle_of_a_running_pole_has_every_view_and_no_secret(
    tmp_path: Path, simulator: Callable[..., Proc], daemon: Callable[..., Proc]
) -> None:
    config, known = _pole(tmp_path)
    # The weather station refuses long reads: the daemon learns a read plan and keeps it.
    sim = simulator(config, "--max-read", "weather=2")
    proc = daemon(config, *bus_ports(sim))
    wait_until(lambda: LEARNT_KEY in api(proc, "plan")["rs485-1"], 15, "a learnt read plan")
    wait_until(lambda: (tmp_path / "state" / "modbus_learnt.json").exists(), 10, "it saved")

    archive = _bundle(tmp_path, config, tmp_path / "state", "pole.tar.gz")
    members = _members(archive)
    _assert_no_secret(archive, members, known)
    parsed = _json_members(members)
    manifest = parsed["manifest.json"]
    assert manifest["daemon_answered"] is True
    assert manifest["pole"] == POLE
    for view in VIEWS:
        assert f"diag/{view}.json" in members, (view, manifest["failed"])
    assert parsed["diag/status.json"]["pole"] == POLE
    assert {p["device"] for p in parsed["diag/points.json"]} >= {"weather", "lamp1", "mcu"}
    assert parsed["diag/plan.json"]["rs485-1"][LEARNT_KEY]["weather"]["max_per_read"]
    assert parsed["diag/mcu.json"]
    assert parsed["diag/lights.json"][0]["lamp"] == "lamp1"
    assert "weather" in parsed["state/modbus_learnt.json"]["buses"]["rs485-1"]
    assert parsed["state/outbox.json"]["storage"]["available"] is True
    assert members["diag/status.txt"].startswith(f"pole {POLE}".encode())
    _assert_common(members, parsed, config)
    # The config is there, each secret file named and none of them read into it.
    pole = yaml.safe_load(members["config/pole.yaml"])
    assert pole["uplink"]["password_file"] == "secrets/mqtt-password"  # noqa: S105
    assert pole["uplink"]["commands"]["hmac_key_file"] == "secrets/pole.key"
    assert "[REDACTED]@10.0.0.5" in pole["devices"]["weather"]["description"]


def test_a_bundle_is_made_without_the_daemon_and_says_what_it_could_not_ask(
    tmp_path: Path,
) -> None:
    config, known = _pole(tmp_path, camera=True)
    state = tmp_path / "state"
    state.mkdir()
    audit = {"actor": "cli:uid=0", "action": "write", "target": "lamp1.dim_level",
             "requested": 40, "ok": True, "read_back": 40, "at": 1.0}  # fmt: skip
    (state / "audit.jsonl").write_text(json.dumps(audit) + "\n")

    archive = _bundle(tmp_path, config, state, "offline.tar.gz")
    members = _members(archive)
    _assert_no_secret(archive, members, known)
    parsed = _json_members(members)
    manifest = parsed["manifest.json"]
    assert manifest["daemon_answered"] is False
    failed = {item["item"]: item["reason"] for item in manifest["failed"]}
    assert "is `smartpole run` running?" in failed["diag status"]
    for view in ("points", "plan", "alarms", "lights", "mcu", "uplink", "cameras"):
        assert f"diag/{view}.json" not in members
        assert failed[f"diag {view}"].startswith("not asked: no daemon socket"), failed
    assert "diag audit" not in failed  # read from its file instead:
    (record,) = parsed["diag/audit.json"]
    assert record["target"] == "lamp1.dim_level"
    assert record["requested"] == 40
    assert parsed["state/outbox.json"]["storage"].startswith("daemon not running")
    _assert_common(members, parsed, config)
    camera = yaml.safe_load(members["config/pole.yaml"])["cameras"]["street"]["source"]
    assert camera == "rtsp://[REDACTED]@192.0.2.10:554/stream1"


def _assert_common(members: dict[str, bytes], parsed: dict[str, Any], config: Path) -> None:
    """What every bundle has, daemon or not."""
    manifest = parsed["manifest.json"]
    assert set(manifest["members"]) == set(members) - {"manifest.json"}
    assert members["version.txt"].startswith(b"smartpole ")
    assert f"config {config} sha256:".encode() in members["version.txt"]
    assert "smartpole" in parsed["packages.json"]
    machine = parsed["machine.json"]
    assert machine["kernel"].startswith("Linux")
    assert machine["cpus"] >= 1
    assert machine["memory_kib"]["MemTotal"] > 0
    assert set(machine["serial_ports"]) == {"devices", "by_id"}
    assert any(disk.get("free_bytes") for disk in machine["disks"].values())
    assert isinstance(parsed["state/files.json"], list)
    # journald and systemd: their output, or the reason in the manifest.
    failed = {item["item"] for item in manifest["failed"]}
    for member, command in (("journal.txt", "journalctl"), ("systemd-unit.txt", "systemctl")):
        assert member in members or any(item.startswith(command) for item in failed)
    assert manifest["secrets"]["values_searched"] >= 5
    assert not manifest["secrets"]["withheld"]
    assert b"BEGIN" not in members["config/pole.yaml"]
