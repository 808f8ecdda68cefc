from laku.core.migrations import run_migrations
from laku.product.models import Base

run_migrations(Base.metadata)
