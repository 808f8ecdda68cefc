"""`python -m laku`: the same command line as `laku`."""

from laku.cli import app

app()
