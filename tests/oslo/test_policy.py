"""oslo.policy: the default rules, a policy file overriding them, and the endpoints under them."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from oslo_config import cfg
from oslo_policy import policy
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit.caller import (
    OPERATIONS_CANCEL,
    OPERATIONS_LIST,
    OPERATIONS_RETRY,
    RULES,
    TASKS_CANCEL,
    TASKS_LIST,
    TASKS_RETRY,
    TASKS_SHOW,
    TASKS_SHOW_HOST,
    Authorize,
    Caller,
    default_authorize,
)
from tasktoolkit.oslo import PolicyAuthorizer, list_rules, oslo_caller
from tests.endpoints.conftest import Seeded, build_app

A, B = "project-a", "project-b"


def who(project: str | None, *roles: str, system: str | None = None) -> Caller:
    return Caller(project_id=project, user_id="u", roles=frozenset(roles), system_scope=system)


def test_the_rules_are_the_toolkits() -> None:
    assert [rule.name for rule in list_rules()] == list(RULES)
    (found,) = entry_points(group="oslo.policy.policies", name="tasktoolkit")
    assert found.load() is list_rules


def test_the_sample_generator_writes_them() -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("oslopolicy-sample-generator")),
            "--namespace",
            "tasktoolkit",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for rule in RULES:
        assert f'#"{rule}": ' in result.stdout


#: keystone's secure RBAC: (caller, rule, target project) -> allowed, for both authorizers.
SECURE_RBAC = [
    pytest.param(who(A, "reader"), TASKS_LIST, A, True, id="project-reader-lists-own"),
    pytest.param(who(A, "reader"), TASKS_LIST, B, False, id="project-reader-not-other"),
    pytest.param(who(A, "reader"), TASKS_LIST, None, False, id="project-reader-not-all"),
    pytest.param(who(A, "reader"), TASKS_CANCEL, A, False, id="project-reader-cannot-cancel"),
    pytest.param(who(A, "reader"), OPERATIONS_CANCEL, A, False, id="project-reader-no-op-cancel"),
    pytest.param(who(A, "reader"), TASKS_SHOW_HOST, A, False, id="project-reader-no-hosts"),
    pytest.param(who(A, "member", "reader"), TASKS_CANCEL, A, True, id="member-cancels-own"),
    pytest.param(who(A, "member"), TASKS_SHOW, A, True, id="member-implies-reader"),
    pytest.param(who(A, "member", "reader"), OPERATIONS_CANCEL, B, False, id="member-not-other"),
    pytest.param(who(A, "member", "reader"), TASKS_SHOW_HOST, A, False, id="member-no-hosts"),
    pytest.param(who(A), TASKS_SHOW, A, False, id="no-role-cannot-show"),
    pytest.param(who(A), TASKS_LIST, A, False, id="no-role-cannot-list"),
    pytest.param(who(A), TASKS_CANCEL, A, False, id="no-role-cannot-cancel"),
    pytest.param(who(A, "observer"), TASKS_LIST, A, False, id="unknown-role-nothing"),
    pytest.param(who(A, "admin"), TASKS_SHOW_HOST, A, True, id="project-admin-hosts-own"),
    pytest.param(who(A, "admin"), TASKS_CANCEL, A, True, id="project-admin-cancels-own"),
    pytest.param(who(A, "admin"), TASKS_LIST, A, True, id="project-admin-implies-reader"),
    pytest.param(who(A, "admin"), TASKS_LIST, None, False, id="project-admin-not-all"),
    pytest.param(who(A, "admin"), TASKS_SHOW_HOST, B, False, id="project-admin-not-other-hosts"),
    pytest.param(who(A, "admin"), OPERATIONS_CANCEL, B, False, id="project-admin-not-other"),
    pytest.param(
        who(None, "reader", system="all"), OPERATIONS_LIST, None, True, id="system-reader-all"
    ),
    pytest.param(who(None, "reader", system="all"), TASKS_SHOW, B, True, id="system-reader-shows"),
    pytest.param(
        who(None, "reader", system="all"), TASKS_CANCEL, B, False, id="system-reader-read-only"
    ),
    pytest.param(
        who(None, "reader", system="all"), TASKS_SHOW_HOST, B, False, id="system-reader-no-hosts"
    ),
    pytest.param(
        who(None, "member", system="all"), TASKS_LIST, None, True, id="system-member-reads-all"
    ),
    pytest.param(
        who(None, "member", system="all"), TASKS_CANCEL, B, False, id="system-member-cannot-act"
    ),
    pytest.param(who(None, system="all"), TASKS_LIST, None, False, id="system-no-role-nothing"),
    pytest.param(who(None, "admin", system="all"), TASKS_LIST, None, True, id="system-admin-all"),
    pytest.param(
        who(None, "admin", system="all"), TASKS_CANCEL, B, True, id="system-admin-acts-anywhere"
    ),
    pytest.param(
        who(None, "admin", system="all"), TASKS_SHOW_HOST, B, True, id="system-admin-hosts"
    ),
    pytest.param(who(None, "reader"), TASKS_LIST, None, False, id="no-project-no-system"),
    pytest.param(who(None, "admin"), TASKS_SHOW, A, False, id="unscoped-admin-nothing"),
    pytest.param(
        who(None, "admin", system="domain"), TASKS_LIST, None, False, id="other-system-scope"
    ),
    pytest.param(who(A, "reader"), "tasktoolkit:unknown", A, False, id="unknown-rule"),
    pytest.param(who(A, "reader"), TASKS_RETRY, A, False, id="project-reader-cannot-rerun"),
    pytest.param(who(A, "reader"), OPERATIONS_RETRY, A, False, id="reader-no-op-rerun"),
    pytest.param(who(A, "member"), TASKS_RETRY, A, True, id="member-reruns-own"),
    pytest.param(who(A, "member"), OPERATIONS_RETRY, A, True, id="member-reruns-own-op"),
    pytest.param(who(A, "member"), TASKS_RETRY, B, False, id="member-no-rerun-other"),
    pytest.param(
        who(None, "reader", system="all"), OPERATIONS_RETRY, B, False, id="system-reader-no-rerun"
    ),
    pytest.param(
        who(None, "admin", system="all"), TASKS_RETRY, B, True, id="system-admin-reruns-anywhere"
    ),
]


@pytest.mark.parametrize(
    "authorize",
    [
        pytest.param(default_authorize, id="default"),
        pytest.param(PolicyAuthorizer(), id="oslo.policy"),
    ],
)
@pytest.mark.parametrize(("caller", "rule", "project", "allowed"), SECURE_RBAC)
def test_both_authorizers_follow_secure_rbac(
    authorize: Authorize, caller: Caller, rule: str, project: str | None, allowed: bool
) -> None:
    assert authorize(caller, rule, {"project_id": project}) is allowed


def test_a_policy_file_overrides_a_default(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text('"tasktoolkit:tasks:show_host": "role:reader"\n')
    conf = cfg.ConfigOpts()
    conf([], default_config_files=[])
    authorize = PolicyAuthorizer(policy.Enforcer(conf, policy_file=str(policy_file)))
    assert authorize(who(A, "reader"), TASKS_SHOW_HOST, {"project_id": A})
    assert not authorize(who(A, "reader"), TASKS_CANCEL, {"project_id": A})


def _headers(project: str | None, roles: str, system: bool = False) -> dict[str, str]:
    headers = {"X-Roles": roles, "X-User-Id": "u"}
    if project is not None:
        headers["X-Project-Id"] = project
    if system:
        headers["OpenStack-System-Scope"] = "all"
    return headers


def test_the_endpoints_under_the_default_policy(
    session_factory: sessionmaker[Session], projects: tuple[Seeded, Seeded]
) -> None:
    a, b = projects
    app = build_app(session_factory, caller_getter=oslo_caller, authorize=PolicyAuthorizer())
    reader, member = _headers(A, "reader"), _headers(A, "member,reader")
    system, admin = _headers(None, "reader", system=True), _headers(A, "admin,member,reader")
    every = set(a.task_ids) | set(b.task_ids)

    assert {t["id"] for t in app.get("/tasks", headers=reader).json["tasks"]} == set(a.task_ids)
    assert {t["id"] for t in app.get("/tasks", headers=system).json["tasks"]} == every
    assert app.get("/tasks", headers=_headers(A, "")).json["tasks"] == []
    app.get(f"/tasks/{b.pending_id}", headers=reader, status=404)
    app.get(f"/operations/{b.operation_id}", headers=system, status=200)

    cancel = f"/clusters/{a.cluster_id}/tasks/{a.pending_id}/cancel"
    app.post(cancel, headers=reader, status=403)
    app.post(cancel, headers=system, status=403)
    assert app.get(f"/tasks/{a.pending_id}", headers=reader).json["task"]["state"] == "pending"
    app.post(cancel, headers=member, status=202)

    failed = f"/tasks/{a.failed_id}"
    assert "traceback" not in app.get(failed, headers=system).json["task"]["error"]
    assert "traceback" in app.get(failed, headers=admin).json["task"]["error"]
