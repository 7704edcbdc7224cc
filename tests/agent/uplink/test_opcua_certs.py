"""The trust folders of the OPC UA server as a technician uses them, with asyncua's client:
made at start (0700), an unknown client's certificate kept in rejected/, and a certificate
moved into trusted/ (or replaced there) accepted without a restart."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest
from asyncua import ua
from asyncua.common.utils import ServiceError
from cryptography import x509

from helpers.opcua import CLIENT_URI, Env, client_pki, connected, point_node, serving
from smartpole.agent.uplink.opcua_certs import TrustList


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.asyncio
async def test_trust_folders_are_made_and_a_moved_certificate_is_accepted_without_restart(
    env: Env,
) -> None:
    opcua = env.state / "opcua"
    shutil.rmtree(opcua / "trusted")  # a fresh pole: nobody made the folders by hand
    async with serving(env) as server:
        for name in ("trusted", "rejected", "pki"):
            assert (opcua / name).is_dir(), name
            assert _mode(opcua / name) == 0o700, name
        with pytest.raises(ua.uaerrors.BadCertificateUntrusted):
            async with connected(env):
                pass
        (kept,) = (opcua / "rejected").iterdir()  # the refused client's certificate
        assert kept.name.startswith("scada-")
        assert kept.read_bytes() == env.trusted.cert.read_bytes()
        kept.rename(opcua / "trusted" / kept.name)  # what the technician does
        async with connected(env) as client:  # the same server: no restart
            assert await (await point_node(client, "meter", "voltage")).read_value() == 229.5
        assert server.status()["rejected_certificates_kept"] == 1


@pytest.mark.asyncio
async def test_a_certificate_replaced_in_place_takes_effect_at_the_next_connection(
    env: Env,
) -> None:
    """Overwriting a trusted file (a client's renewed certificate under the same name) does
    not change the folder's modification time; it must be seen all the same."""
    trusted = env.state / "opcua" / "trusted" / "scada.der"
    async with serving(env):
        async with connected(env):
            pass
        with pytest.raises(ua.uaerrors.BadCertificateUntrusted):
            async with connected(env, env.untrusted):
                pass
        before = trusted.parent.stat().st_mtime_ns
        with trusted.open("r+b") as out:  # in place: no new directory entry
            out.truncate(0)
            out.write(env.untrusted.cert.read_bytes())
        assert trusted.parent.stat().st_mtime_ns == before
        async with connected(env, env.untrusted):
            pass
        with pytest.raises(ua.uaerrors.BadCertificateUntrusted):
            async with connected(env):
                pass


@pytest.mark.asyncio
async def test_the_rejected_folder_is_bounded_and_loose_modes_are_tightened(
    tmp_path: Path,
) -> None:
    trusted, rejected = tmp_path / "trusted", tmp_path / "rejected"
    trusted.mkdir()
    trusted.chmod(0o755)
    trust = TrustList(trusted, rejected, keep=2)
    trust.prepare()
    assert (_mode(trusted), _mode(rejected)) == (0o700, 0o700)
    keys = tmp_path / "keys"
    keys.mkdir()
    certs = [x509.load_der_x509_certificate(client_pki(keys, f"c{n}").cert.read_bytes())
             for n in range(3)]  # fmt: skip
    app = ua.ApplicationDescription(ApplicationUri=CLIENT_URI)
    for cert in [*certs, certs[0]]:  # the first one twice: kept once
        with pytest.raises(ServiceError):
            await trust(cert, app)
    assert sorted(p.name.split("-")[0] for p in rejected.iterdir()) == ["c0", "c1"]
    assert (trust.rejected, trust.rejected_kept, trust.rejected_not_kept) == (4, 2, 1)
