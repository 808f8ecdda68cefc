from laku.core.migrations import run_migrations
from laku.group_buying.models import Base

run_migrations(Base.metadata)
