"""`<SERVICE>_DB_POOL_SIZE` set for `make run` reaches that service (the README lists it among
the runner's settings; the services inherit only an allowlist of the runner's environment, so
it was silently ignored: review of 2026-12-04)."""

from __future__ import annotations

from pathlib import Path

from vaultpay_devstack.credentials import MeshSecrets
from vaultpay_devstack.mesh import MeshConfig
from vaultpay_devstack.postgres import Provisioned
from vaultpay_devstack.redis import RedisServer
from vaultpay_devstack.services import DEFAULT_PORTS, SERVICES, EnvInputs, service_env


def test_a_pool_size_set_for_make_run_reaches_only_its_service(tmp_path: Path) -> None:
    config = MeshConfig.from_env({"TRANSFER_DB_POOL_SIZE": " 16 ", "WALLET_DB_POOL_SIZE": ""})
    assert config.db_pool_sizes == {"transfer": 16}
    inputs = EnvInputs(
        profile="dev",
        ports=dict(DEFAULT_PORTS),
        databases=Provisioned("127.0.0.1", 5432),
        redis=RedisServer("127.0.0.1", 6379),
        smtp_port=2525,
        secrets=MeshSecrets.load(tmp_path),
        var_dir=tmp_path,
        db_pool_sizes=config.db_pool_sizes,
    )
    by_name = {s.name: s for s in SERVICES}
    assert service_env(by_name["transfer"], inputs)["TRANSFER_DB_POOL_SIZE"] == "16"
    assert "WALLET_DB_POOL_SIZE" not in service_env(by_name["wallet"], inputs)
