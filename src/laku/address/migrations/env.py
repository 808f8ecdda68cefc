from laku.address.models import Base
from laku.core.migrations import run_migrations

run_migrations(Base.metadata)
