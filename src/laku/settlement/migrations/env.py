from laku.core.migrations import run_migrations
from laku.settlement.models import Base

run_migrations(Base.metadata)
