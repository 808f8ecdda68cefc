from sqlalchemy.orm import DeclarativeBase

from laku.core.db import service_metadata
from laku.core.idempotency import idempotency_table


class Base(DeclarativeBase):
    metadata = service_metadata("wallet")


idempotency_keys = idempotency_table(Base.metadata)
