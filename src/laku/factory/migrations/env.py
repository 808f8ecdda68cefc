from laku.core.migrations import run_migrations
from laku.factory.models import Base

run_migrations(Base.metadata)
