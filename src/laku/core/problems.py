"""A domain module's own errors, declared one a line: which kind of error (its HTTP status), its
stable `code` and its `title`.

    PriceMismatch = problem(Conflict, "price_mismatch", "The price has changed")

Each is a class of its own, named for its code, which callers and tests catch by name.
"""

import sys
from typing import TypeVar

from laku.core.errors import DomainError

Kind = TypeVar("Kind", bound=DomainError)


def problem(kind: type[Kind], code: str, title: str) -> type[Kind]:
    """A subclass of `kind` answering `code` and `title` (`price_mismatch`: PriceMismatch)."""
    name = "".join(word.capitalize() for word in code.split("_"))
    # Of the module that declares it, as namedtuple's classes are, so tracebacks name it there.
    module = sys._getframe(1).f_globals["__name__"]
    return type(
        name, (kind,), {"code": code, "title": title, "__module__": module, "__qualname__": name}
    )
