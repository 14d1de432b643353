from pathlib import Path

import pytest

from ftqueue.errors import FtqueueError
from ftqueue.settings import ENV_VARS, get_settings, load_settings, reset_settings


def test_defaults_live_under_home() -> None:
    s = load_settings({"FTQUEUE_HOME": "/srv/ftq"})
    assert s.database_url == "sqlite:////srv/ftq/ftqueue.db"
    assert s.artifacts_dir == Path("/srv/ftq/artifacts")
    assert s.cache_dir == Path("/srv/ftq/cache")
    assert s.broker_url == "redis://localhost:6379/0"
    assert s.eager is False


def test_environment_overrides_each_setting() -> None:
    s = load_settings(
        {
            "FTQUEUE_DATABASE_URL": "postgresql+psycopg://u@h/db",
            "FTQUEUE_BROKER_URL": "redis://r:6380/2",
            "FTQUEUE_ARTIFACTS_DIR": "/data/a",
            "FTQUEUE_EAGER": "yes",
            "FTQUEUE_TIME_LIMIT": "600",
            "FTQUEUE_MAX_ATTEMPTS": "5",
        }
    )
    assert s.database_url == "postgresql+psycopg://u@h/db"
    assert s.broker_url == "redis://r:6380/2"
    assert s.artifacts_dir == Path("/data/a")
    assert s.eager is True
    assert s.max_attempts == 5
    # Redis must not redeliver a message while its job may still legally run.
    assert s.visibility_timeout > s.time_limit > s.soft_time_limit


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("FTQUEUE_EAGER", "maybe", "yes/no"),
        ("FTQUEUE_TIME_LIMIT", "ten", "whole number"),
        ("FTQUEUE_MAX_ATTEMPTS", "0", "too small"),
        ("FTQUEUE_NOTIFY", "slakc://token", "not a URL Apprise knows"),
        ("FTQUEUE_NOTIFY_ON", "finished", "is no event"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, fragment: str) -> None:
    with pytest.raises(FtqueueError) as err:
        load_settings({name: value})
    assert name in err.value.message and fragment in err.value.message


def test_settings_are_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTQUEUE_BROKER_URL", "redis://first/0")
    reset_settings()
    assert get_settings().broker_url == "redis://first/0"
    monkeypatch.setenv("FTQUEUE_BROKER_URL", "redis://second/0")
    assert get_settings().broker_url == "redis://first/0"
    reset_settings()
    assert get_settings().broker_url == "redis://second/0"


def test_every_setting_has_an_environment_variable() -> None:
    assert ENV_VARS["database_url"] == "FTQUEUE_DATABASE_URL"
    assert all(v.startswith("FTQUEUE_") for v in ENV_VARS.values())


def test_service_urls_are_built_from_their_parts_with_the_passwords_encoded() -> None:
    from kombu.utils.url import url_to_parts
    from sqlalchemy.engine import make_url

    password = "p@ss:w/rd#1% ?&="
    parts = {
        "FTQUEUE_POSTGRES_PASSWORD": password,
        "FTQUEUE_POSTGRES_USER": "ml team",
        "FTQUEUE_POSTGRES_DB": "runs",
        "FTQUEUE_POSTGRES_ADDR": "db.internal:5433",
        "FTQUEUE_REDIS_PASSWORD": password,
        "FTQUEUE_REDIS_ADDR": "cache.internal:6380",
    }
    settings = load_settings(parts)
    url = make_url(settings.database_url)
    assert (url.drivername, url.username, url.password) == (
        "postgresql+psycopg",
        "ml team",
        password,
    )
    assert (url.host, url.port, url.database) == ("db.internal", 5433, "runs")
    broker = url_to_parts(settings.broker_url)
    assert (broker.password, broker.hostname, broker.port, broker.path) == (
        password,
        "cache.internal",
        6380,
        "0",
    )
    # A URL given whole wins over its parts.
    given = {**parts, "FTQUEUE_DATABASE_URL": "sqlite:///x.db", "FTQUEUE_BROKER_URL": "redis://r/1"}
    assert (load_settings(given).database_url, load_settings(given).broker_url) == (
        "sqlite:///x.db",
        "redis://r/1",
    )


@pytest.mark.parametrize("value", ["", "  ", "change-me", "change-me-postgres", "Change-Me"])
@pytest.mark.parametrize("name", ["FTQUEUE_POSTGRES_PASSWORD", "FTQUEUE_REDIS_PASSWORD"])
def test_an_empty_or_placeholder_password_is_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(FtqueueError) as refused:
        load_settings({name: value})
    assert refused.value.message.startswith(f"{name} is empty" if not value.strip() else name)
    assert "placeholder" in refused.value.message or not value.strip()
    assert "\n" not in refused.value.message
