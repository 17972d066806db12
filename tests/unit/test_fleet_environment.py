"""The environment `deployer.fleet` runs each stack's pulumi with (no servers: a file backend)."""

from pathlib import Path

from deployer.fleet import FLEET_GOGC, stack_environment

FILE_BACKEND = {"PULUMI_BACKEND_URL": "file:///tmp/nowhere", "PATH": "/usr/bin"}


def stack_file(folder: Path, stack: str, admin: str) -> Path:
    (folder / f"Pulumi.{stack}.yaml").write_text(f"config:\n  pgcreds:postgresAdminUser: {admin}\n")
    return folder


def test_each_stack_runs_with_a_lazier_go_collector_and_its_own_login(tmp_path: Path):
    project = stack_file(tmp_path, "billing", "billing_deployer")
    environment = stack_environment(project, "billing", read_only=True, base=FILE_BACKEND)
    assert environment["GOGC"] == FLEET_GOGC == "400"
    assert (environment["PGUSER"], environment["PGCREDS_SESSION_KIND"]) == ("billing_deployer", "preview")
    assert stack_environment(project, "billing", read_only=False, base=FILE_BACKEND)["PGCREDS_SESSION_KIND"] == "deploy"


def test_a_gogc_of_the_callers_own_is_kept(tmp_path: Path):
    project = stack_file(tmp_path, "billing", "billing_deployer")
    environment = stack_environment(project, "billing", read_only=True, base={**FILE_BACKEND, "GOGC": "off"})
    assert environment["GOGC"] == "off"
