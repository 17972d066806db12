"""The deployer policy in vault-policies/ is enough, and the policies the program
generates for applications are no more than needed: a stack goes up and down
with a token holding only deployer.hcl, and an application logged in with its
AppRole can read its own credentials and nothing else."""

from __future__ import annotations

import hvac
import hvac.exceptions
import pytest

from clients.tls import vault_tls_verify
from deployer.bootstrap import StackSpec, policy_text
from smoke_check import app_login
from stacks import ProgramStack, vault


def deployer_policy(stack: ProgramStack) -> str:
    """What the bootstrap gives a stack's deploy role: the program's needs on the stack's
    mount, and the deploy session's (its transit key: the tests' one)."""
    return "".join(
        policy_text(name, StackSpec("tests", stack.mount)) for name in ("deployer.hcl", "deploy-session.hcl")
    )


def test_deployer_policy_and_application_identities(new_stack: ProgramStack):
    root = vault()
    policy = f"{new_stack.mount}-deployer"
    other_role = f"r{new_stack.suffix}-read"
    new_stack.set(
        roles=new_stack.roles_config()
        + [{"name": other_role, "tables": ["weekly_metrics_reporting"], "access": "read"}]
    )
    root.sys.create_or_update_policy(policy, deployer_policy(new_stack))
    try:
        deployer_token = root.auth.token.create(policies=[policy], ttl="10m")["auth"]["client_token"]
        new_stack.stack.workspace.env_vars.update(VAULT_TOKEN=deployer_token, BAO_TOKEN=deployer_token)
        new_stack.stack.up()

        paths = new_stack.outputs()["appRoles"][new_stack.role_name]
        assert set(paths) == {"roleIdPath", "secretIdPath", "loginPath", "policy"}
        app = app_login(root, paths)
        token = app.auth.token.lookup_self()["data"]
        assert sorted(token["policies"]) == ["default", paths["policy"]] and token["ttl"] <= 3600
        secret = app.secrets.database.generate_credentials(new_stack.role_name, mount_point=new_stack.mount)
        assert secret["lease_duration"] == 3600

        denied = {
            "another role's credentials": lambda: app.secrets.database.generate_credentials(
                other_role, mount_point=new_stack.mount
            ),
            "the connection": lambda: app.secrets.database.read_connection("postgresql", mount_point=new_stack.mount),
            "sys/mounts": lambda: app.sys.list_mounted_secrets_engines(),
            "its own policy": lambda: app.sys.read_acl_policy(paths["policy"]),
            "a secret-id of its own": lambda: app.write_data(paths["secretIdPath"]),
        }
        for what, attempt in denied.items():
            with pytest.raises(hvac.exceptions.Forbidden):
                attempt()
                pytest.fail(f"the application token could read {what}")
        # A secret-id logs in once (secretIdUses: 1).
        role_id = root.read(paths["roleIdPath"])["data"]["role_id"]
        secret_id = root.write_data(paths["secretIdPath"])["data"]["secret_id"]
        again = hvac.Client(url=root.url, verify=vault_tls_verify())
        again.adapter.post(f"/v1/{paths['loginPath']}", json={"role_id": role_id, "secret_id": secret_id})
        with pytest.raises(hvac.exceptions.InvalidRequest):
            again.adapter.post(f"/v1/{paths['loginPath']}", json={"role_id": role_id, "secret_id": secret_id})

        new_stack.stack.destroy()  # revokes the application's lease too, with the deployer token
        assert f"{new_stack.mount}/" not in root.sys.list_mounted_secrets_engines()["data"]
        assert f"{new_stack.mount}-approle/" not in root.sys.list_auth_methods()["data"]
        assert paths["policy"] not in root.sys.list_acl_policies()["data"]["keys"]
    finally:
        root.sys.delete_policy(policy)
