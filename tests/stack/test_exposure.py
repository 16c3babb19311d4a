"""Exposure: the stack listens on loopback only, and its admin endpoints answer loopback only.

The listening sockets are those of the supervisor's process tree: supervisord's pid file and
``supervisorctl status`` give each program's process, ``/proc/<pid>/fd`` its socket inodes
(and those of its descendants), and ``/proc/net/{tcp,tcp6,udp,udp6}`` the address of each
inode. They must equal the table of docs/security.md one for one (a row whose port is
``ephemeral`` stands for one port of the kernel's ephemeral range), and each must be on
127.0.0.0/8 or ::1 (or ::ffff:127.0.0.0/104: an IPv6 socket bound to an IPv4-mapped loopback
address, as Java binds, takes IPv4 loopback traffic only) unless that document lists it as an
exception.

The admin endpoints (``/admin/faults`` of each service, the gateway's ``POST /admin/tenants``)
are called in process through the real applications with a non-loopback client address, and
on the live services with ``X-Forwarded-For`` (uvicorn takes the client address from it when
the peer is loopback, as behind a local reverse proxy). Nothing is sent outside loopback.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from services.common.http import install_error_handlers
from services.common.settings import Settings
from services.faults import ExecutorFaults, FaultState, WorkerFaults, faults_router
from services.gateway.app import create_app
from stack.components import components, running_profile
from stack.stackctl import _supervisorctl, stack_paths
from tests import live

ROOT = Path(__file__).resolve().parents[2]
SECURITY_DOC = ROOT / "docs" / "security.md"
LISTENERS_HEADING = "### Listening sockets"
SCALE_HEADING = "### Scale profile: additional listening sockets"
EXCEPTIONS_HEADING = "### Exceptions"
EPHEMERAL = "ephemeral"
POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/somaagent"
SERVICE_PORTS = {"gateway": 8010, "conversation-worker": 8011, "tool-executor": 8012}
#: A switch of each service that changes nothing for other traffic while set to a marker no
#: message contains; ``None`` where the service has no such switch.
HARMLESS_SWITCH = {
    "gateway": None,
    "conversation-worker": "poison_marker",
    "tool-executor": "tool_failure_marker",
}

NON_LOOPBACK_CLIENTS: list[tuple[str, int] | None] = [
    ("192.0.2.10", 40000),
    ("10.0.0.1", 40000),
    ("0.0.0.0", 40000),
    ("2001:db8::10", 40000),
    ("::ffff:192.0.2.10", 40000),
    ("::", 40000),
    ("localhost", 40000),
    ("testclient", 50000),
    None,
]
LOOPBACK_CLIENTS = [("127.0.0.1", 40000), ("127.8.9.10", 40000), ("::1", 40000),
                    ("::ffff:127.0.0.1", 40000)]
FORWARDED_NON_LOOPBACK = ["192.0.2.10", "2001:db8::10", "::ffff:192.0.2.10",
                          "127.0.0.1, 192.0.2.10", "192.0.2.10, 127.0.0.1", "[2001:db8::10]:443"]
FORWARDED_GARBAGE = ["garbage", "unknown", "localhost", "[::1", "999.1.1.1", "127.0.0.1.5",
                     "%%%", "x" * 300, "127.0.0.1:notaport:1"]
FORWARDED_LOOPBACK = ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1", "[::1]:8443"]


# --- listening sockets -------------------------------------------------------------------

@dataclass(frozen=True, order=True)
class Listener:
    """One listening socket: the component whose process holds it, and its local address."""

    component: str
    protocol: str
    address: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.component}:{self.protocol}:{host}:{self.port}"


def _proc_address(hex_address: str) -> str:
    """The address of a /proc/net line: hex, each 32-bit word in host byte order."""
    raw = bytes.fromhex(hex_address)
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return f"::ffff:{ip.ipv4_mapped}"
    return str(ip)


def _proc_net_listening() -> dict[int, tuple[str, str, int]]:
    """Socket inode -> (protocol, address, port) of every listening TCP and unconnected UDP
    socket, IPv4 and IPv6."""
    found = {}
    for table in ("tcp", "tcp6", "udp", "udp6"):
        protocol = table.rstrip("6")
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
            listening = state == "0A" if protocol == "tcp" else int(remote.split(":")[1], 16) == 0
            if listening and inode:
                address, port = local.split(":")
                found[inode] = (protocol, _proc_address(address), int(port, 16))
    return found


def _stack_processes() -> dict[int, str]:
    """Every process of the stack: pid -> its supervisor program (supervisord itself too)."""
    paths = stack_paths()
    roots = {int((paths.state / "supervisord.pid").read_text()): "supervisord"}
    for line in _supervisorctl(paths, "status", check=False).stdout.splitlines():
        if m := re.match(r"(\S+)\s+RUNNING\s+pid (\d+),", line):
            roots[int(m[2])] = m[1]
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:  # exited meanwhile
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    owners = {}
    for pid in parents:
        ancestor = pid
        while ancestor > 1 and ancestor not in roots:
            ancestor = parents.get(ancestor, 0)
        if ancestor in roots:
            owners[pid] = roots[ancestor]
    return owners


def stack_listeners() -> set[Listener]:
    """Every listening socket held by a process of the stack."""
    sockets = _proc_net_listening()
    found = set()
    for pid, component in _stack_processes().items():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if (m := re.fullmatch(r"socket:\[(\d+)\]", target)) and int(m[1]) in sockets:
                found.add(Listener(component, *sockets[int(m[1])]))
    return found


def running_components() -> set[str]:
    """The names of the running profile's components."""
    paths = stack_paths()
    return {c.name for c in components(paths, running_profile(paths))}


def socket_table() -> list[dict[str, str]]:
    """The documented sockets of the running profile: the default table, plus the scale
    profile's when it runs."""
    scale = running_profile(stack_paths()) == "scale"
    return doc_table(LISTENERS_HEADING) + (doc_table(SCALE_HEADING) if scale else [])


def doc_table(heading: str) -> list[dict[str, str]]:
    """The rows of the Markdown table under ``heading`` in docs/security.md, by column name."""
    lines = SECURITY_DOC.read_text().splitlines()
    assert heading in lines, f"{SECURITY_DOC} lacks the heading {heading!r}"
    rows = []
    for line in lines[lines.index(heading) + 1:]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append([cell.strip().strip("`") for cell in line.strip().strip("|").split("|")])
    assert len(rows) >= 2, f"no table under {heading!r} in {SECURITY_DOC}"
    header, _separator, *body = rows
    return [dict(zip(header, row, strict=True)) for row in body]


def covers(row: dict[str, str], listener: Listener) -> bool:
    """Whether a row of docs/security.md stands for ``listener``."""
    if (row["component"], row["protocol"], row["address"]) != (
        listener.component, listener.protocol, listener.address
    ):
        return False
    if row["port"] == EPHEMERAL:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low <= listener.port <= high
    return int(row["port"]) == listener.port


def on_loopback(address: str) -> bool:
    """Whether a bound address is in 127.0.0.0/8, is ::1, or is IPv4-mapped 127.0.0.0/8."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip in ipaddress.ip_network("127.0.0.0/8") or ip == ipaddress.ip_address("::1")


@pytest.fixture(scope="module")
def listeners(stack: None) -> set[Listener]:
    """The stack's listening sockets, once every component holds at least one (a component
    restarted by another test gets a few seconds to listen again)."""
    names = running_components()
    return live.wait_until(
        stack_listeners,
        lambda found: names <= {listener.component for listener in found},
        timeout=30,
        what="a listening socket for every component of the stack",
    )


def test_every_listening_socket_is_on_loopback_or_a_documented_exception(
    listeners: set[Listener],
) -> None:
    """Each socket the stack listens on is bound to loopback (127.0.0.0/8, ::1, IPv4-mapped
    127.0.0.0/8), or is an exception docs/security.md names."""
    exceptions = doc_table(EXCEPTIONS_HEADING)
    exposed = sorted(
        str(s) for s in listeners
        if not on_loopback(s.address) and not any(covers(row, s) for row in exceptions)
    )
    assert not exposed, f"listening beyond loopback, undocumented: {exposed}"


def test_listening_sockets_equal_the_documented_table_one_for_one(
    listeners: set[Listener],
) -> None:
    """The stack's listening sockets and the rows of docs/security.md's table match one for
    one."""
    table = socket_table()
    undocumented = sorted(str(s) for s in listeners if not any(covers(r, s) for r in table))
    assert undocumented == [], "listening, not in docs/security.md"
    counts = {" ".join(row.values()): sum(covers(row, s) for s in listeners) for row in table}
    assert {row: n for row, n in counts.items() if n != 1} == {}, (
        "rows of docs/security.md matching no or several listening sockets"
    )


def test_every_component_of_the_stack_listens_somewhere(listeners: set[Listener]) -> None:
    """Every supervisor program of the stack holds at least one listening socket (so the
    loopback check above cannot pass on an empty list)."""
    names = running_components()
    assert names - {s.component for s in listeners} == set()
    assert names <= {row["component"] for row in socket_table()}


def test_the_scale_table_documents_exactly_the_scale_profiles_own_components() -> None:
    """The scale profile's extra table names each component the scale profile adds, and no
    other."""
    paths = stack_paths()
    added = {c.name for c in components(paths, "scale")} - {c.name for c in components(paths)}
    assert {row["component"] for row in doc_table(SCALE_HEADING)} == added


def test_documented_exceptions_are_real_and_give_a_reason() -> None:
    """Every exception is a row of the socket table, is not on loopback, and says why."""
    keys = ("component", "protocol", "address", "port")
    table = {tuple(row[k] for k in keys) for row in doc_table(LISTENERS_HEADING)}
    for row in doc_table(EXCEPTIONS_HEADING):
        socket = tuple(row[k] for k in keys)
        assert socket in table, f"exception {socket} is not in the socket table"
        assert not on_loopback(row["address"]), f"exception {socket} is on loopback"
        assert len(row["why"]) > 20, f"exception {socket} does not say why"


def test_every_port_of_the_readme_component_table_is_a_documented_socket() -> None:
    """The ports README.md's component table names are all in docs/security.md's table."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("| component | version | from | address |", 1)[1].split("\n\n", 1)[0]
    ports = {int(p) for row in section.splitlines()[2:]
             for p in re.findall(r"(?<![\d.])\d{4,5}(?![\d.])", row.rsplit("|", 2)[-2])}
    assert ports, "README.md's component table names no port"
    documented = {row["port"] for row in doc_table(LISTENERS_HEADING)}
    assert {str(port) for port in ports} - documented == set()


# --- admin endpoints, in process ---------------------------------------------------------

def _bare_service_app(state: FaultState[Any]) -> FastAPI:
    """The admin part of the worker or executor application, built as their __main__ does."""
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(faults_router(state))
    return app


APPS: dict[str, tuple[Callable[[], FastAPI], dict[str, object]]] = {
    "gateway": (lambda: create_app(Settings.from_env()), {"gateway_5xx_ratio": 0.5}),
    "conversation-worker": (lambda: _bare_service_app(FaultState(WorkerFaults)),
                            {"poison_marker": "exposure-marker", "budget_exhausted": True}),
    "tool-executor": (lambda: _bare_service_app(FaultState(ExecutorFaults)),
                      {"tool_failure_ratio": 0.25}),
}


def _from(app: ASGIApp, client: tuple[str, int] | None) -> httpx.AsyncClient:
    """A client of ``app`` in process whose requests come from ``client`` (ASGI scope)."""

    async def with_client(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, "client": client}, receive, send)

    return httpx.AsyncClient(transport=httpx.ASGITransport(with_client), base_url="http://svc")


def _assert_refused(answer: httpx.Response) -> None:
    """A 403 whose JSON body says the admin endpoints answer loopback clients only."""
    assert answer.status_code == 403, answer.text
    body = answer.json()
    assert body["error"] == "forbidden", body
    assert "loopback clients only" in body["message"], body


def _client_id(client: tuple[str, int] | None) -> str:
    """The test id of a client address."""
    return "unix-socket" if client is None else client[0]


@pytest.mark.parametrize("client", NON_LOOPBACK_CLIENTS, ids=_client_id)
@pytest.mark.parametrize("service", APPS)
async def test_admin_faults_refuse_a_non_loopback_client_and_change_nothing(
    service: str, client: tuple[str, int] | None
) -> None:
    """GET, POST and DELETE /admin/faults from a client not on loopback answer 403 and leave
    the switches as they were."""
    make_app, patch = APPS[service]
    app = make_app()
    async with _from(app, ("127.0.0.1", 40000)) as local, _from(app, client) as remote:
        before = (await local.post("/admin/faults", json=patch)).json()
        _assert_refused(await remote.get("/admin/faults"))
        _assert_refused(await remote.post("/admin/faults", json={k: None for k in patch}))
        _assert_refused(await remote.delete("/admin/faults"))
        assert (await local.get("/admin/faults")).json() == before
        assert {k: before[k] for k in patch} == patch


@pytest.mark.parametrize("client", LOOPBACK_CLIENTS, ids=_client_id)
@pytest.mark.parametrize("service", APPS)
async def test_admin_faults_answer_every_loopback_client(
    service: str, client: tuple[str, int]
) -> None:
    """Clients on 127.0.0.0/8, ::1 and IPv4-mapped ::ffff:127.0.0.1 can read, set and reset
    the switches."""
    make_app, patch = APPS[service]
    async with _from(make_app(), client) as local:
        default = (await local.get("/admin/faults")).json()
        assert (await local.post("/admin/faults", json=patch)).json() == default | patch
        assert (await local.delete("/admin/faults")).json() == default


@pytest.mark.parametrize("client", NON_LOOPBACK_CLIENTS, ids=_client_id)
async def test_tenant_creation_refuses_a_non_loopback_client(
    client: tuple[str, int] | None,
) -> None:
    """POST /admin/tenants from a client not on loopback answers 403 before reading anything
    (the in-process gateway has no database: reaching the handler would fail otherwise)."""
    async with _from(create_app(Settings.from_env()), client) as remote:
        _assert_refused(await remote.post("/admin/tenants", json={"tenant_id": "never"}))


# --- admin endpoints, live, through X-Forwarded-For --------------------------------------

def _live(service: str) -> str:
    """The base URL of the live ``service``."""
    return f"http://127.0.0.1:{SERVICE_PORTS[service]}"


@pytest.fixture
def marked(request: pytest.FixtureRequest, stack: None) -> Iterator[tuple[str, dict[str, Any]]]:
    """The live service under test, with its harmless switch set to a unique marker (when it
    has one) so that a reset would show; restored afterwards unless someone changed it."""
    service: str = request.param
    base, switch = _live(service), HARMLESS_SWITCH[service]
    if switch is None:
        yield service, httpx.get(f"{base}/admin/faults").json()
        return
    previous = httpx.get(f"{base}/admin/faults").json()[switch]
    marker = f"exposure-{uuid.uuid4().hex}"
    state = httpx.post(f"{base}/admin/faults", json={switch: marker}).json()
    try:
        yield service, state
    finally:
        if httpx.get(f"{base}/admin/faults").json()[switch] == marker:
            httpx.post(f"{base}/admin/faults", json={switch: previous}).raise_for_status()


@pytest.mark.parametrize("marked", SERVICE_PORTS, indirect=True)
@pytest.mark.parametrize("forwarded", FORWARDED_NON_LOOPBACK + FORWARDED_GARBAGE)
def test_live_admin_faults_refuse_a_forwarded_non_loopback_client(
    marked: tuple[str, dict[str, Any]], forwarded: str
) -> None:
    """A request relayed from loopback for a non-loopback or unparsable X-Forwarded-For
    client gets a 403 (not a 500) from the live service, and the switches stay as they were."""
    service, before = marked
    base, headers = _live(service), {"X-Forwarded-For": forwarded}
    switch = HARMLESS_SWITCH[service]
    change = {"gateway_5xx_ratio": 1.0} if switch is None else {switch: None}
    _assert_refused(httpx.get(f"{base}/admin/faults", headers=headers))
    _assert_refused(httpx.post(f"{base}/admin/faults", json=change, headers=headers))
    _assert_refused(httpx.delete(f"{base}/admin/faults", headers=headers))
    assert httpx.get(f"{base}/admin/faults").json() == before


@pytest.mark.parametrize("forwarded", FORWARDED_LOOPBACK)
@pytest.mark.parametrize("service", SERVICE_PORTS)
def test_live_admin_faults_answer_a_forwarded_loopback_client(
    stack: None, service: str, forwarded: str
) -> None:
    """A request relayed for a loopback X-Forwarded-For client (IPv4, ::1, IPv4-mapped) is
    answered by the live service."""
    answer = httpx.get(f"{_live(service)}/admin/faults", headers={"X-Forwarded-For": forwarded})
    assert answer.status_code == 200, answer.text


async def _tenant_rows(tenant_id: str) -> int:
    """How many tenant rows and API keys PostgreSQL holds for ``tenant_id``."""
    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        count = await conn.fetchval(
            "SELECT (SELECT count(*) FROM tenants WHERE id = $1)"
            " + (SELECT count(*) FROM api_keys WHERE tenant_id = $1)", tenant_id)
    finally:
        await conn.close()
    return int(count)


@pytest.mark.parametrize("forwarded", FORWARDED_NON_LOOPBACK + FORWARDED_GARBAGE)
async def test_live_tenant_creation_refuses_a_forwarded_non_loopback_client(
    stack: None, forwarded: str
) -> None:
    """POST /admin/tenants relayed for a non-loopback or unparsable client gets a 403 and no
    tenant row or API key is written to PostgreSQL."""
    tenant_id = f"exposure-{uuid.uuid4().hex[:12]}"
    async with httpx.AsyncClient(base_url=_live("gateway")) as gateway:
        _assert_refused(await gateway.post("/admin/tenants", json={"tenant_id": tenant_id},
                                           headers={"X-Forwarded-For": forwarded}))
    assert await _tenant_rows(tenant_id) == 0


@pytest.mark.parametrize("forwarded", FORWARDED_LOOPBACK)
async def test_live_tenant_creation_answers_a_forwarded_loopback_client(
    stack: None, forwarded: str
) -> None:
    """POST /admin/tenants relayed for a loopback client creates the tenant and its key."""
    tenant_id = f"exposure-{uuid.uuid4().hex[:12]}"
    async with httpx.AsyncClient(base_url=_live("gateway")) as gateway:
        answer = await gateway.post("/admin/tenants", json={"tenant_id": tenant_id},
                                    headers={"X-Forwarded-For": forwarded})
    assert answer.status_code == 201, answer.text
    assert await _tenant_rows(tenant_id) == 2
