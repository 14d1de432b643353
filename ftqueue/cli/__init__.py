"""The `ftqueue` command line: a thin shell over the package's Python API."""

from __future__ import annotations

from ftqueue.cli.app import cli, main

__all__ = ["cli", "main"]
