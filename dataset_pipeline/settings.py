"""Process-wide settings read once from the environment, so every entry point (Dagster, CLI, tests) agrees."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Environment = Literal["development", "production"]


class ConfigurationError(RuntimeError):
    """The environment asks for something unsafe or impossible; the message says which variable to set."""


@dataclass(frozen=True, slots=True)
class Settings:
    environment: Environment
    database_url: str | None
    storage_root: Path
    home: Path  # DAGSTER_HOME: instance config, the embedded PostgreSQL's data folder, logs

    @property
    def embedded_pgdata(self) -> Path:
        return self.home / "pgdata"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        environment = env.get("ENVIRONMENT", "development").strip().lower() or "development"
        if environment not in ("development", "production"):
            raise ConfigurationError(
                f"ENVIRONMENT={environment!r} is not known; use 'development' (default) or 'production'."
            )
        database_url = env.get("DATABASE_URL", "").strip() or None
        if environment == "production" and database_url is None:
            raise ConfigurationError(
                "ENVIRONMENT=production needs DATABASE_URL (postgresql+psycopg2://user:password@host:5432/db); "
                "the embedded PostgreSQL is for development only."
            )
        project = project_home(env)
        storage_root = _path(env.get("DATASET_STORAGE_ROOT", ""), project / "storage")
        home = _path(env.get("DAGSTER_HOME", ""), project / ".dagster_home")
        return cls(environment, database_url, storage_root, home)  # type: ignore[arg-type]


def project_home(env: Mapping[str, str] | None = None) -> Path:
    """The folder the defaults (`storage/`, `.dagster_home/`) live in, wherever a command is run from:
    DATASET_PIPELINE_HOME, else the checkout this package is installed from (`make dev` installs it
    editable), else the current directory."""
    env = os.environ if env is None else env
    if value := env.get("DATASET_PIPELINE_HOME", "").strip():
        return Path(value).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "dataset_pipeline" / "settings.py").is_file():
        return checkout
    return Path.cwd().resolve()


def _path(value: str, default: Path) -> Path:
    """A path from the environment (relative to where the command runs, as typed), or the project's default."""
    return Path(value.strip()).expanduser().resolve() if value.strip() else default
