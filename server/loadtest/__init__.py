"""`sparrow loadtest` (server/cli.py imports this package for its two entry points)."""

from server.loadtest.cli import add_arguments, run

__all__ = ["add_arguments", "run"]
