from laku.core.migrations import run_migrations
from laku.warehouse.models import Base

run_migrations(Base.metadata)
