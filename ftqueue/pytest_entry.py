"""The `pytest11` entry point: loads ftqueue's fixtures only when a run asks for them.

pytest imports every installed entry point in every run, so this module imports nothing of
ftqueue (it lives outside ftqueue.testing for that) and adds nothing but a way to ask:
``pytest --ftqueue``, or ``ftqueue = true`` in the ini options. ``-p ftqueue.testing`` and a
conftest's ``pytest_plugins = ["ftqueue.testing"]`` load the fixtures without it.
"""

from __future__ import annotations

import pytest

PLUGIN = "ftqueue.testing"


def pytest_addoption(parser: pytest.Parser) -> None:
    help = "load ftqueue's fixtures (ftqueue_env, ftqueue_worker; see ftqueue.testing)"
    parser.addini("ftqueue", help=help, type="bool", default=False)
    parser.getgroup("ftqueue").addoption("--ftqueue", action="store_true", help=help)


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("ftqueue") or config.getini("ftqueue"):
        config.pluginmanager.import_plugin(PLUGIN)
