from laku.core.migrations import run_migrations
from laku.wallet.models import Base

run_migrations(Base.metadata)
