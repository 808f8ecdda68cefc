from laku.core.migrations import run_migrations
from laku.logistics.models import Base

run_migrations(Base.metadata)
