"""The platform audit (design 16) as the tests run it: settlement-service's `/api/admin/audit`,
waited for until what the platform was still doing is done, and `laku audit` as a subprocess."""

import os
import subprocess
import sys
from typing import Any

from laku.testing.platform import ADMIN_EMAIL, ADMIN_PASSWORD, Platform, bearer
from tests.support import eventually, ok

# Seconds to wait for what outboxes and webhooks do in the background: generous, as a busy
# two-core machine delays them.
AUDIT_WAIT = 60.0


def platform_audit(platform: Platform) -> dict[str, Any]:
    """settlement-service's whole audit, nothing counted as in flight."""
    return ok(
        platform.client("settlement").get(
            "/api/admin/audit",
            params={"graceSeconds": 0},
            headers=bearer(platform.admin_token),
            timeout=60,
        )
    )


def quiet_audit(platform: Platform) -> dict[str, Any]:
    """The audit once what the platform was still doing (outboxes, webhooks) is done."""
    report = eventually(
        lambda: report if (report := platform_audit(platform))["ok"] else None,
        timeout=AUDIT_WAIT,
        every=0.5,
    )
    assert report, [i for i in platform_audit(platform)["invariants"] if not i["ok"]]
    return report


def run_laku_audit(platform: Platform, **env: str) -> subprocess.CompletedProcess[str]:
    """`laku audit --grace 0` as a subprocess, configured as the test platform's services are."""
    return subprocess.run(
        [sys.executable, "-m", "laku", "audit", "--grace", "0"],
        env={
            **os.environ,
            "LAKU_DATABASE_URL": platform.database_url,
            "LAKU_PORT_OFFSET": str(platform.settings.port_offset),
            "LAKU_ADMIN_EMAIL": ADMIN_EMAIL,
            "LAKU_ADMIN_PASSWORD": ADMIN_PASSWORD,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


def laku_audit(platform: Platform) -> tuple[int, dict[str, str], str]:
    """`laku audit` against the test platform: (exit code, invariant -> ok or VIOLATION, its
    whole output)."""
    result = run_laku_audit(platform)
    assert not result.stderr, result.stderr
    verdicts = {}
    for line in result.stdout.splitlines():
        verdict, _, rest = line.partition(" ")
        if verdict in ("ok", "VIOLATION"):
            verdicts[rest.strip().split(":")[0]] = verdict
    return result.returncode, verdicts, result.stdout
