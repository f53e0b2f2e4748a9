from pathlib import Path

import pytest

from dataset_pipeline.embedded_postgres import normalize_url, redact, with_search_path
from dataset_pipeline.settings import ConfigurationError, Settings

CHECKOUT = Path(__file__).resolve().parents[1]


def test_development_is_the_default_and_needs_no_database_url():
    settings = Settings.from_env({})
    assert settings.environment == "development"
    assert settings.database_url is None


def test_the_defaults_are_the_checkouts_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a command run from elsewhere still finds the project's storage and instance
    settings = Settings.from_env({})
    assert (settings.storage_root, settings.home) == (CHECKOUT / "storage", CHECKOUT / ".dagster_home")
    elsewhere = Settings.from_env({"DATASET_PIPELINE_HOME": str(tmp_path / "team")})
    assert (elsewhere.storage_root, elsewhere.home) == (
        tmp_path / "team/storage",
        tmp_path / "team/.dagster_home",
    )
    typed = Settings.from_env({"DATASET_STORAGE_ROOT": "mine", "DAGSTER_HOME": str(tmp_path / "h")})
    assert (typed.storage_root, typed.home) == (tmp_path / "mine", tmp_path / "h")  # as typed, here


def test_production_refuses_to_start_without_database_url():
    with pytest.raises(ConfigurationError, match="ENVIRONMENT=production needs DATABASE_URL"):
        Settings.from_env({"ENVIRONMENT": "production"})


def test_unknown_environment_is_refused():
    with pytest.raises(ConfigurationError, match="not known"):
        Settings.from_env({"ENVIRONMENT": "staging"})


def test_driver_is_always_spelled_out():
    assert normalize_url("postgresql://u@h:5432/d") == "postgresql+psycopg2://u@h:5432/d"
    assert normalize_url("postgres://u@h/d").startswith("postgresql+psycopg2://")
    with pytest.raises(ConfigurationError, match="psycopg2"):
        normalize_url("postgresql+asyncpg://u@h/d")


def test_redact_hides_the_password():
    url = "postgresql+psycopg2://alice:Sup3r-Secret@db.example:5432/app"
    assert "Sup3r-Secret" not in redact(url)
    assert "alice" in redact(url)


def test_dagster_url_points_at_its_own_schema():
    assert "search_path" in with_search_path("postgresql+psycopg2://u@h/d", "dagster")
