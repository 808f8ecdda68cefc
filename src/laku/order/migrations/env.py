from laku.core.migrations import run_migrations
from laku.order.models import Base

run_migrations(Base.metadata)
