"""A deleted transit key (issue "No single mistake wedges a stack", class 2): the
bootstrap refuses to make a new key under the old name for a stack whose state
exists (a new key would not decrypt it, and would hide why), and the documented
restore from the bootstrap's backup gets the stack back, every object managed."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import hvac.exceptions
import pytest
from pulumi import automation as auto

from deployer import transit_key
from stacks import REPO, ProgramStack, cleanup, make_stack, vault

BOOTSTRAP = ["--pg-host", "127.0.0.1", "--repository", "local/pg-dynamic-creds", "--app-database", "postgres"]


def bootstrap(stack: ProgramStack, backups: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(REPO / "venv/bin/python"),
            "-m",
            "deployer.bootstrap",
            *BOOTSTRAP,
            "--pg-port",
            os.environ["PGPORT"],
            "--pg-sslmode",
            os.environ.get("PGCREDS_PG_SSLMODE", "verify-full"),
            "--pg-sslrootcert",
            os.environ["PGCREDS_TEST_CA"],
            "--stack",
            f"{stack.stack.name}:{stack.mount}",
            "--key-backup-dir",
            str(backups),
            "--password-stdin",
            "--jwt-pubkey",
            str(Path(os.environ["PGCREDS_LOCAL_DIR"]) / "ci-oidc" / "issuer.pub.pem"),
        ],
        cwd=REPO,
        input=Path(os.environ["PGCREDS_SUPERUSER_PASSWORD_FILE"]).read_text(),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def keyed_stack(tmp_path: Path) -> Iterator[ProgramStack]:
    """A stack on the team backend with a transit key of its own, made by the bootstrap."""
    test_stack = make_stack(tmp_path, env={"PULUMI_BACKEND_URL": os.environ["PULUMI_BACKEND_URL"]})
    yield test_stack
    cleanup(test_stack)
    subprocess.run(
        ["pulumi", "stack", "rm", "--yes", "--force", "--stack", test_stack.stack.name],
        cwd=test_stack.project_dir,
        env={**os.environ, **test_stack.stack.workspace.env_vars},
        capture_output=True,
    )
    client, name = vault(), test_stack.stack.name
    for kind in ("deploy", "preview"):
        client.sys.delete_acl_policy(f"pgcreds-{kind}-{name}")
        client.delete(f"auth/jwt/role/pgcreds-{kind}-{name}")
    try:
        client.write(f"transit/keys/{transit_key(name)}/config", deletion_allowed=True)
        client.delete(f"transit/keys/{transit_key(name)}")
    except hvac.exceptions.VaultError:
        pass  # gone already


def test_a_deleted_transit_key_is_refused_a_new_one_and_restored_from_its_backup(
    keyed_stack: ProgramStack, tmp_path: Path
):
    backups, name = tmp_path / "backups", keyed_stack.stack.name
    made = bootstrap(keyed_stack, backups)
    assert made.returncode == 0, made.stderr
    assert (backups / f"{transit_key(name)}.backup").stat().st_mode & 0o777 == 0o600
    keyed_stack.run("stack", "change-secrets-provider", f"hashivault://{transit_key(name)}")
    keyed_stack.stack.up()

    client = vault()
    client.write(f"transit/keys/{transit_key(name)}/config", deletion_allowed=True)
    client.delete(f"transit/keys/{transit_key(name)}")
    with pytest.raises(auto.CommandError):
        keyed_stack.stack.preview()

    # The bootstrap, which says it repairs what is missing, does not make a key the state cannot use.
    refused = bootstrap(keyed_stack, backups)
    assert refused.returncode != 0
    message = refused.stderr.strip().splitlines()[-1]
    assert f"the transit key {transit_key(name)} is gone, but the state database holds the stack {name!r}" in message
    assert f"python -m deployer.keys restore --stack {name}" in message and message.endswith("Nothing was changed.")
    with pytest.raises(hvac.exceptions.InvalidPath):
        client.secrets.transit.read_key(transit_key(name))

    restored = subprocess.run(
        [
            str(REPO / "venv/bin/python"),
            "-m",
            "deployer.keys",
            "restore",
            "--stack",
            name,
            "--backup-dir",
            str(backups),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert restored.returncode == 0, restored.stderr
    assert set(keyed_stack.stack.up(refresh=True).summary.resource_changes) == {"same"}
    assert keyed_stack.smoke_check().passed


def foreign_encrypted_key(key: str = "pgcreds-dev") -> str:
    """A stack data key as another Vault's key encrypted it (here: the dev stack's key)."""
    ciphertext = vault().secrets.transit.encrypt_data(key, base64.b64encode(os.urandom(32)).decode())
    return base64.b64encode(ciphertext["data"]["ciphertext"].encode()).decode()


def recover(stack: ProgramStack) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(REPO / "venv/bin/python"), str(REPO / "local/recover_stack.py"), stack.stack.name, str(stack.project_dir)],
        env={**os.environ, **stack.stack.workspace.env_vars},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_stack_file_whose_encryptedkey_wiped_servers_made_is_put_right_by_make_up(new_stack: ProgramStack):
    """A checkout whose first `make up` ran on other servers: its Pulumi.<stack>.yaml
    keeps an `encryptedkey:` this Vault cannot decrypt (before: `cipher: message
    authentication failed`). With no state here, `make up` (recover_stack) removes it."""
    name = new_stack.stack.name
    new_stack.run("stack", "rm", "--yes", "--force", "--preserve-config")
    stack_file = new_stack.project_dir / f"Pulumi.{name}.yaml"
    text = re.sub(r"^encryptedkey:.*\n", "", stack_file.read_text(), flags=re.MULTILINE)
    assert "secretsprovider: hashivault://pgcreds-tests" in text
    stack_file.write_text(text + f"encryptedkey: {foreign_encrypted_key()}\n")
    as_before = subprocess.run(
        ["pulumi", "stack", "init", name, "--non-interactive", "--secrets-provider", "hashivault://pgcreds-tests"],
        cwd=new_stack.project_dir,
        env={**os.environ, **new_stack.stack.workspace.env_vars},
        capture_output=True,
        text=True,
    )
    assert "message authentication failed" in as_before.stdout + as_before.stderr  # what it did before
    fixed = recover(new_stack)
    assert fixed.returncode == 0, fixed.stderr
    assert "encryptedkey was made by a Vault whose key is not pgcreds-tests here" in fixed.stderr
    assert "encryptedkey" not in stack_file.read_text()
    new_stack.run("stack", "select", "--create", "--secrets-provider", "hashivault://pgcreds-tests")
    assert new_stack.stack.up().summary.result == "succeeded"


def test_with_a_state_here_the_line_takes_the_states_data_key_or_names_the_restore(new_stack: ProgramStack):
    """A checkout used with two sets of servers (OpenBao's and HashiCorp Vault's):
    the stack file holds the other set's data key, and the state here records its
    own, which this Vault decrypts: the line takes that one. A state whose key this
    Vault cannot decrypt either (its transit key is not this one) is named, not touched."""
    new_stack.stack.up()
    stack_file = new_stack.project_dir / f"Pulumi.{new_stack.stack.name}.yaml"
    text = re.sub(r"^encryptedkey:.*\n", "", stack_file.read_text(), flags=re.MULTILINE)
    own_key = re.search(r"^encryptedkey:.*$", stack_file.read_text(), flags=re.MULTILINE).group(0)
    stack_file.write_text(text + f"encryptedkey: {foreign_encrypted_key()}\n")
    fixed = recover(new_stack)
    assert fixed.returncode == 0, fixed.stderr
    assert (
        "the stack's state here records its own, which this Vault decrypts: the line now holds that one" in fixed.stderr
    )
    assert own_key in stack_file.read_text()
    assert set(new_stack.stack.preview().change_summary) == {"same"}

    # Named, not touched: a secrets provider whose key decrypts neither line.
    stack_file.write_text(
        text.replace("hashivault://pgcreds-tests", "hashivault://pgcreds-dev")
        + f"encryptedkey: {foreign_encrypted_key(key='pgcreds-tests')}\n"
    )
    stopped = recover(new_stack)
    assert stopped.returncode != 0
    assert "cannot be decrypted with the transit key pgcreds-dev" in stopped.stderr
    assert "python -m deployer.keys restore" in stopped.stderr and "encryptedkey" in stack_file.read_text()
    stack_file.write_text(text + own_key + "\n")  # (so that the fixture's clean-up can destroy it)
