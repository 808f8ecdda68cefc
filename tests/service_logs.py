"""What a service process logged (JSON lines in the session's service-logs folder)."""

import json
from typing import Any

from laku.testing.platform import Platform
from tests.support import eventually

LogEntry = dict[str, Any]


def logged(platform: Platform, service: str, event: str, **fields: Any) -> list[LogEntry]:
    """The service's log entries for `event` whose fields include `fields`, oldest first."""
    log_dir = platform.supervisor.log_dir
    assert log_dir is not None, "the platform's services do not log to files"
    entries = []
    with open(log_dir / f"{service}.log", encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # uvicorn's own lines, tracebacks
            if (
                isinstance(entry, dict)
                and entry.get("event") == event
                and all(entry.get(key) == value for key, value in fields.items())
            ):
                entries.append(entry)
    return entries


def wait_logged(
    platform: Platform, service: str, event: str, timeout: float = 5.0, **fields: Any
) -> list[LogEntry]:
    """`logged`, polled until there is at least one entry (log lines are flushed async)."""
    return eventually(
        lambda: logged(platform, service, event, **fields),
        timeout,
        every=0.05,
        what=f"{service} logging {event} {fields}",
    )
