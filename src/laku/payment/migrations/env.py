from laku.core.migrations import run_migrations
from laku.payment.models import Base

run_migrations(Base.metadata)
