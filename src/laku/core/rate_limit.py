"""Rate limits kept in the service's own schema, so every process of a service counts together.

A limit is a fixed window counter per key (`register:address:203.0.113.7`): the first hit opens
a window of `seconds`, and at most `limit` hits are claimed in it. A claim of several keys is
one statement (INSERT ... ON CONFLICT DO UPDATE ... WHERE under the limit ... RETURNING),
committed on its own: it counts every key still under its limit, under their row locks, and a
key at its limit is left as it is. Concurrent claims of a key wait for each other, so no more
than `limit` ever pass. If any key was at its limit, the keys this claim did count are given
back at once, so a refused request counts against none of them (a client refused at one address
does not use up the allowance of an account it shares with others).

Why one statement, not a transaction: a row lock is held until its commit, and a counter every
request of one address shares (a NAT, a load test) would otherwise stay locked while the
service's event loop comes back to the transaction to commit it; every claim of that key then
waits out that delay in turn (measured: joins from one address serialised at 30/s).
"""

import ipaddress
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    Table,
    Text,
    case,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.db import Database
from laku.core.errors import PROBLEM_CONTENT_TYPE, Problem, TooManyRequests
from laku.core.settings import Rate


def rate_limit_table(metadata: MetaData) -> Table:
    return Table(
        "rate_limits",
        metadata,
        Column("key", Text, primary_key=True),
        Column("hits", Integer, nullable=False),
        Column("window_ends_at", DateTime(timezone=True), nullable=False, index=True),
    )


@dataclass(frozen=True)
class Limit:
    key: str
    rate: Rate
    # The problem's code when this limit refuses (e.g. `login_locked`).
    code: str = "rate_limited"


class RateLimited(TooManyRequests):
    code, title = "rate_limited", "Too many requests"


# Documented on each rate-limited route.
RATE_LIMITED_RESPONSES: dict[int | str, dict[str, Any]] = {
    429: {
        "model": Problem,
        "content": {PROBLEM_CONTENT_TYPE: {}},
        "description": "Over a rate limit; `Retry-After` says in how many seconds to try again",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    }
}


async def claim(session: AsyncSession, table: Table, limits: list[Limit]) -> None:
    """Count one hit on every limit's key, or none if any is at its limit: then `RateLimited`
    (429) with `Retry-After` until that key's window ends. The session's first work: the
    count is committed by its own statement, and the session's connection is given back to
    the pool, so what the caller does next is a transaction of its own."""
    if not limits:
        return
    # One order for every claimer: two claims of the same keys never wait on each other's locks.
    ordered = sorted(limits, key=lambda each: each.key)
    t = table
    now = func.statement_timestamp()
    lapsed = t.c.window_ends_at <= now
    values = [
        {
            "key": limit.key,
            "hits": 1,
            "window_ends_at": now + func.make_interval(0, 0, 0, 0, 0, 0, limit.rate.seconds),
        }
        for limit in ordered
    ]
    limit_of_key = case({limit.key: limit.rate.limit for limit in ordered}, value=t.c.key)
    statement = insert(t).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=[t.c.key],
        set_={
            "hits": case((lapsed, 1), else_=t.c.hits + 1),
            "window_ends_at": case(
                (lapsed, statement.excluded.window_ends_at), else_=t.c.window_ends_at
            ),
        },
        where=or_(lapsed, t.c.hits < limit_of_key),
    ).returning(t.c.key, t.c.hits)
    connection = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    counted = {row.key: row.hits for row in await connection.execute(statement)}
    refused = [
        limit
        for limit in ordered
        if limit.key not in counted or counted[limit.key] > limit.rate.limit
    ]
    await session.commit()
    if refused:
        await _refuse(session, table, refused[0], given_back=sorted(counted))


async def _refuse(session: AsyncSession, table: Table, limit: Limit, given_back: list[str]) -> None:
    """Give back the hits a refused claim counted, and refuse it until `limit`'s window ends."""
    for key in given_back:
        await refund(session, table, key)
    window_ends_in = await session.scalar(
        select(
            func.ceil(func.extract("epoch", table.c.window_ends_at - func.statement_timestamp()))
        ).where(table.c.key == limit.key)
    )
    await session.commit()
    raise RateLimited(
        "Too many requests; try again later",
        code=limit.code,
        retry_after=max(int(window_ends_in or 0), 1),
    )


async def forget(session: AsyncSession, table: Table, key: str) -> None:
    """Start the key afresh (a login that succeeded clears its failures). Not committed."""
    await session.execute(delete(table).where(table.c.key == key))


async def refund(session: AsyncSession, table: Table, key: str) -> None:
    """Give back one hit of the key's current window (a claimed attempt that turned out not
    to be what the limit counts). Not committed."""
    t = table
    await session.execute(
        update(t)
        .where(t.c.key == key, t.c.window_ends_at > func.statement_timestamp())
        .values(hits=func.greatest(t.c.hits - 1, 0))
    )


async def purge_ended_windows(db: Database, table: Table) -> int:
    """Delete the counters whose window has ended: they count for nothing any more. Rows a
    claim holds are skipped (the next purge takes them), so a purge never deadlocks a claim."""
    t = table
    ended = (
        select(t.c.key)
        .where(t.c.window_ends_at < func.statement_timestamp())
        .with_for_update(skip_locked=True)
    )
    async with db.sessions.begin() as session:
        result = await session.execute(delete(t).where(t.c.key.in_(ended.scalar_subquery())))
    return result.rowcount


def client_address(request: Request) -> str:
    """The client's IP address as the connection gives it. Behind a proxy that the
    `trusted_proxies` setting names, uvicorn has already replaced it with the address the proxy
    saw (X-Forwarded-For); from anyone else that header is ignored. IPv6 clients are counted
    per /64, the block one subscriber usually holds."""
    host = request.client.host if request.client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)
