"""The local stack the suite and `make run` rely on: data stores, provisioning, mail, clean stops."""

from __future__ import annotations

import asyncio
import os
import shutil
import smtplib
import stat
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from vaultpay_devstack.infra import Infra, scratch_dir, start_infra
from vaultpay_devstack.mesh import Mesh, MeshConfig
from vaultpay_devstack.postgres import Provisioned, provision, run_sql, unique_suffix
from vaultpay_devstack.probes import GrpcHealthProbe, http_ok
from vaultpay_devstack.procs import pid_alive
from vaultpay_devstack.redis import ping
from vaultpay_devstack.smtp_sink import read_messages, start_smtp_sink, wait_for_message

pytestmark = pytest.mark.integration


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention `text` (an orphan check)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and pid_alive(int(proc.name)):
            found.append(f"{proc.name}: {cmdline}")
    return found


def test_private_postgres_runs_version_15_on_loopback(infra: Infra) -> None:
    assert infra.postgres.host == "127.0.0.1"
    if not infra.postgres.private:
        pytest.skip("uses an existing PostgreSQL; its version and listen address are its own")
    version = run_sql(infra.postgres.admin_dsn, lambda conn: conn.fetchval("SHOW server_version"))
    listen = run_sql(infra.postgres.admin_dsn, lambda conn: conn.fetchval("SHOW listen_addresses"))

    assert str(version).startswith("15.")
    assert listen == "127.0.0.1"


def _connect_without_password(host: str, port: int) -> None:
    async def attempt() -> None:
        conn = await asyncpg.connect(host=host, port=port, user="postgres", database="postgres")
        await conn.close()

    asyncio.run(attempt())


def test_private_postgres_and_redis_refuse_a_local_user_without_the_password(
    infra: Infra,
) -> None:
    if not (infra.postgres.private and infra.redis.private):
        pytest.skip("uses existing servers; their authentication is theirs")
    assert infra.postgres.data_dir is not None
    socket_dir = str(infra.postgres.data_dir.parent / "socket")

    for host in ("127.0.0.1", socket_dir):  # TCP and the Unix socket
        with pytest.raises(asyncpg.InvalidPasswordError):
            _connect_without_password(host, infra.postgres.port)
    assert not ping(infra.redis.host, infra.redis.port)
    assert ping(infra.redis.host, infra.redis.port, infra.redis.password)


def test_a_trust_cluster_of_an_older_runner_is_converted_on_start() -> None:
    var_dir = scratch_dir("vaultpay-legacy-")
    try:
        first = start_infra(var_dir, fast=True, postgres_password="first-secret")
        first.stop()
        hba = var_dir / "postgres" / "data" / "pg_hba.conf"
        rules = [
            line if line.startswith("#") else line.replace("scram-sha-256", "trust")
            for line in hba.read_text().splitlines()
        ]
        hba.write_text("\n".join(rules) + "\n")
        assert any(line.endswith("trust") for line in rules)

        second = start_infra(var_dir, fast=True, postgres_password="second-secret")
        try:
            assert not [r for r in hba.read_text().splitlines() if r.rstrip().endswith("trust")]
            with pytest.raises(asyncpg.InvalidPasswordError):
                _connect_without_password("127.0.0.1", second.postgres.port)
            user = run_sql(second.postgres.admin_dsn, lambda c: c.fetchval("SELECT current_user"))
            assert user == "postgres"
        finally:
            second.stop()
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)


def test_provisioned_app_role_connects_but_cannot_create_tables(databases: Provisioned) -> None:
    auth_app = databases.url(databases.auth_app_role, databases.auth_database, driver="postgresql")
    user = run_sql(auth_app, lambda conn: conn.fetchval("SELECT current_user"))

    assert user == databases.auth_app_role
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        run_sql(auth_app, lambda conn: conn.execute("CREATE TABLE intruder (id int)"))


def test_provisioned_owner_owns_its_database_and_can_create_tables(
    databases: Provisioned,
) -> None:
    owner = databases.url(
        databases.vaultpay_owner_role, databases.vaultpay_database, driver="postgresql"
    )

    async def create_and_report_owner(conn: Any) -> str:
        await conn.execute("CREATE TABLE ledger_probe (id int)")
        return str(
            await conn.fetchval(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
            )
        )

    assert run_sql(owner, create_and_report_owner) == databases.vaultpay_owner_role
    assert databases.app_dsn("wallet").startswith("postgresql+asyncpg://vaultpay_wallet_app_m")


def test_provision_is_idempotent(infra: Infra, databases: Provisioned) -> None:
    again = provision(
        infra.postgres.admin_dsn, suffix=databases.suffix, password=databases.password
    )

    assert again == databases


def test_redis_answers_ping(infra: Infra) -> None:
    assert infra.redis.ping()
    assert infra.redis.url(1).endswith("/1")


def test_smtp_sink_stores_a_message_and_reads_it_back(tmp_path: Path) -> None:
    maildir = tmp_path / "mail"
    sink = start_smtp_sink(maildir, log=tmp_path / "smtp-sink.log")
    try:
        message = EmailMessage()
        message["From"] = "VaultPay <no-reply@vaultpay.local>"
        message["To"] = "asha@example.com"
        message["Subject"] = "Your PIN reset code"
        message.set_content("Use code 123456 within 15 minutes.")
        with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
            client.send_message(message)

        mail = wait_for_message(maildir, to="asha@example.com", timeout=5)
    finally:
        sink.stop()

    assert mail.subject == "Your PIN reset code"
    assert mail.sender == "no-reply@vaultpay.local"
    assert "code 123456" in mail.text
    assert mail.path.suffix == ".eml"
    assert len(read_messages(maildir)) == 1
    assert "subject='Your PIN reset code'" in (tmp_path / "smtp-sink.log").read_text()
    assert not pid_alive(sink.process.pid)


def test_private_infra_stops_without_leaving_processes() -> None:
    var_dir = scratch_dir("vaultpay-stop-")
    try:
        started = start_infra(var_dir, fast=True)
        pids = started.pids
        assert len(pids) == 2
        assert all(pid_alive(pid) for pid in pids)

        started.stop()

        assert not any(pid_alive(pid) for pid in pids)
        assert _processes_mentioning(str(var_dir)) == []
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)


def test_mesh_without_services_gives_auth_its_environment_and_stops_cleanly(
    infra: Infra,
) -> None:
    var_dir, suffix = scratch_dir("vaultpay-mesh-bare-"), unique_suffix("bare")
    config = MeshConfig.for_tests(
        var_dir,
        services=(),
        gateway=False,
        postgres_admin_url=infra.postgres.admin_dsn,
        database_suffix=suffix,
        drop_databases_on_stop=True,
        report=lambda _: None,
    )
    try:
        with Mesh(config) as mesh:
            env = mesh.env_for("auth")
            wallet = mesh.env_for("wallet")
            transfer = mesh.env_for("transfer")
            pids = [proc.pid for proc in mesh.processes().values()]
        secrets_mode = stat.S_IMODE((var_dir / "secrets.json").stat().st_mode)
        log_mode = stat.S_IMODE(mesh.log_dir.stat().st_mode)
        mail_mode = stat.S_IMODE(mesh.maildir.stat().st_mode)
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)

    assert set(env) == {
        "VAULTPAY_PROFILE",
        "VAULTPAY_SMTP_HOST",
        "VAULTPAY_SMTP_PORT",
        "AUTH_GRPC_ADDRESS",
        "AUTH_DATABASE_URL",
        "AUTH_DATABASE_APP_ROLE",
        "AUTH_REDIS_URL",
        "AUTH_SERVICE_CLIENTS",
        "AUTH_KEY_ENCRYPTION_KEY",
        "AUTH_AUDIT_CHECKPOINT_DIR",
        "AUTH_BCRYPT_ROUNDS",
        "AUTH_GATEWAY_SECRET",
    }
    # The table owner's DSN goes to migrations only, never to the running service.
    assert "AUTH_MIGRATION_DATABASE_URL" not in env
    assert env["VAULTPAY_PROFILE"] == "test"
    assert env["AUTH_BCRYPT_ROUNDS"] == "4"
    assert env["AUTH_DATABASE_APP_ROLE"] == f"vaultpay_auth_app{suffix}"
    assert env["AUTH_DATABASE_URL"].endswith(f"/vaultpay_auth{suffix}")
    assert env["AUTH_REDIS_URL"].endswith("/0")
    client_secret = wallet["WALLET_SERVICE_CLIENT_SECRET"]
    assert f"wallet:{client_secret}" in env["AUTH_SERVICE_CLIENTS"].split(",")
    assert wallet["WALLET_AUTH_ADDRESS"] == env["AUTH_GRPC_ADDRESS"]
    assert wallet["WALLET_REDIS_URL"].endswith("/1")
    # The services of the shared database share its audit chain key, never auth's.
    assert wallet["WALLET_AUDIT_CHAIN_KEY"] == transfer["TRANSFER_AUDIT_CHAIN_KEY"]
    assert secrets_mode == 0o600
    assert log_mode == mail_mode == 0o700  # logs and mail are the mesh user's only
    assert not any(pid_alive(pid) for pid in pids)


@pytest.mark.e2e
def test_mesh_serves_grpc_health_and_gateway_readiness(mesh: Mesh) -> None:
    for name in mesh.services:
        with GrpcHealthProbe(mesh.grpc_address(name)) as health:
            assert health.probe(), name
    assert mesh.envoy is not None, "the mesh started no Envoy gateway"
    assert mesh.envoy.exited() is None, "Envoy has exited"
    assert http_ok(f"http://127.0.0.1:{mesh.config.admin_port}/ready")


def test_children_get_an_allowlisted_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from vaultpay_devstack.workspace import python_env

    monkeypatch.setenv("VAULTPAY_POSTGRES_ADMIN_URL", "postgresql://postgres:canary@x/postgres")
    env = python_env({"AUTH_GRPC_ADDRESS": "127.0.0.1:1"})
    assert "VAULTPAY_POSTGRES_ADMIN_URL" not in env
    assert env["AUTH_GRPC_ADDRESS"] == "127.0.0.1:1"
    assert env["PATH"]


def test_a_running_service_holds_neither_the_owner_nor_the_admin_dsn(mesh: Mesh) -> None:
    auth = mesh.services["auth"]
    environ = Path(f"/proc/{auth.pid}/environ").read_bytes().split(b"\0")
    names = {item.split(b"=", 1)[0].decode() for item in environ if item}
    assert "AUTH_DATABASE_URL" in names
    assert "AUTH_MIGRATION_DATABASE_URL" not in names
    assert "VAULTPAY_POSTGRES_ADMIN_URL" not in names


def test_stop_never_signals_a_process_that_is_not_a_mesh(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from vaultpay_devstack import cli

    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        state = tmp_path / cli.STATE_FILE
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(
            json.dumps({"supervisor_pid": bystander.pid, "pids": {}, "grpc": {}, "env": {}})
        )
        assert cli.stop(tmp_path, timeout=1) == 0
        assert bystander.poll() is None  # left alone
    finally:
        bystander.kill()
        bystander.wait(5)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="root + setpriv")
def test_a_child_run_as_another_user_gets_only_that_users_ids(tmp_path: Path) -> None:
    import pwd

    from vaultpay_devstack.procs import ManagedProcess, wait_until

    entry = pwd.getpwnam("postgres")
    proc = ManagedProcess.start(
        "sleeper", ["sleep", "30"], log=tmp_path / "sleeper.log", user="postgres"
    )
    try:
        # setpriv execs `sleep` in the same PID: wait for that exec.
        comm = Path(f"/proc/{proc.pid}/comm")
        wait_until(lambda: comm.read_text().strip() == "sleep", what="the exec", proc=proc)
        status = Path(f"/proc/{proc.pid}/status")
        fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
        assert fields["Uid"].split() == [str(entry.pw_uid)] * 4
        assert fields["Gid"].split() == [str(entry.pw_gid)] * 4
        assert fields["Groups"].split() == []
    finally:
        proc.stop()
    assert proc.exited() is not None


_SLOW_START = """
import sys, time
from pathlib import Path
from vaultpay_devstack import cli
cli.Mesh.start = lambda self: time.sleep(60)  # a start-up that takes a while
sys.exit(cli.run(Path(sys.argv[1])))
"""


def test_stop_finds_a_mesh_that_is_still_starting(tmp_path: Path) -> None:
    """The state file used to be written once the mesh was up: `make stop` during the
    minutes of a first start-up answered "no mesh runs" and left it running."""
    import subprocess
    import sys

    from vaultpay_devstack import cli
    from vaultpay_devstack.procs import wait_until

    starting = subprocess.Popen(
        [sys.executable, "-c", _SLOW_START, str(tmp_path)], stdout=subprocess.DEVNULL
    )
    try:
        state = tmp_path / cli.STATE_FILE
        wait_until(state.exists, what="the starting mesh's state file")
        assert cli.status(tmp_path) == 0
        assert cli.env(tmp_path, "auth") == 1  # nothing to export yet
        assert cli.stop(tmp_path, timeout=30) == 0
        assert starting.wait(10) == 0  # it unwound as on Ctrl-C
        assert not state.exists()
    finally:
        starting.kill()
        starting.wait(5)


def test_a_mesh_run_through_the_vaultpay_local_script_is_recognised(tmp_path: Path) -> None:
    import subprocess
    import sys

    from vaultpay_devstack import cli
    from vaultpay_devstack.procs import wait_until

    script = tmp_path / "vaultpay-local"
    script.write_text("import time\ntime.sleep(30)\n")
    supervisor = subprocess.Popen([sys.executable, str(script), "run"])
    # A process that only mentions the name (a pager on a log, after pid reuse) is no mesh.
    reader = subprocess.Popen([sys.executable, str(script), str(tmp_path / "vaultpay-local.log")])
    try:
        wait_until(lambda: cli._supervisor_alive(supervisor.pid), what="a supervisor recognised")
        reader_cmdline = Path(f"/proc/{reader.pid}/cmdline")
        wait_until(lambda: b"vaultpay-local.log" in reader_cmdline.read_bytes(), what="the exec")
        assert not cli._supervisor_alive(reader.pid)
    finally:
        for process in (supervisor, reader):
            process.kill()
            process.wait(5)
