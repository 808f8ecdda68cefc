from laku.core.migrations import run_migrations
from laku.notification.models import Base

run_migrations(Base.metadata)
