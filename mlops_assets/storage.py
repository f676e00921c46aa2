"""Where state lives, decided once from the environment (INTERFACE.md, "Storage").

``MLOPS_HOME`` (default ``.mlops/`` in the working directory) holds everything not named by another variable.
Nothing in the project reads these variables anywhere else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Storage:
    home: Path
    dagster_home: Path
    mlflow_tracking_uri: str
    mlflow_artifact_root: str
    online_store_url: str
    prediction_log_url: str
    # Deployment history (promotions, rollbacks) and its promotion lock: SQLite file or PostgreSQL URL.
    deployment_history_url: str = ""
    # Offline feature store on a database (a PostgreSQL table); empty = Parquet under $MLOPS_HOME/offline_store.
    offline_store_url: str = ""
    # Base URL of an MLflow UI on the tracking store (e.g. http://127.0.0.1:5000): Dagster metadata then links to
    # the MLflow run and model version. Empty: no links (a URL nobody serves is worse than none).
    mlflow_ui_url: str = ""

    @property
    def offline_store(self) -> Path:
        return self.home / "offline_store"

    @property
    def quarantine(self) -> Path:
        return self.home / "quarantine"

    @property
    def deployments(self) -> Path:
        return self.home / "deployments"

    def missing_state(self) -> str | None:
        """Why there is nothing stored here yet (no run has written to this storage), or None.

        Only what can be known without creating anything: a SQLite MLflow store whose file does not exist. A
        database server is assumed to hold state (asking would need a connection, and a reader of a production
        store is not the place to decide)."""
        db = sqlite_file(self.mlflow_tracking_uri)
        if db is not None and not db.exists():
            return f"no state yet in {self.home} (MLOPS_HOME): no MLflow store at {db}"
        return None

    def ensure(self) -> Storage:
        """Create the local folders (never the working tree)."""
        for p in (self.home, self.dagster_home, self.offline_store, self.quarantine, self.deployments):
            p.mkdir(parents=True, exist_ok=True)
        return self


def storage_from_env(env: dict[str, str] | None = None) -> Storage:
    """Read the storage variables; defaults keep everything under ``$MLOPS_HOME``."""
    env = dict(os.environ) if env is None else env
    home = Path(env.get("MLOPS_HOME") or ".mlops").absolute()
    dagster_home = Path(env.get("DAGSTER_HOME") or home / "dagster").absolute()
    tracking = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
    artifacts = env.get("MLOPS_ARTIFACT_ROOT") or (home / "mlflow-artifacts").as_uri()
    online = env.get("MLOPS_ONLINE_STORE_URL") or f"sqlite:///{home / 'online_store.db'}"
    predictions = env.get("MLOPS_PREDICTION_LOG_URL") or f"sqlite:///{home / 'predictions.db'}"
    history = env.get("MLOPS_DEPLOYMENT_HISTORY_URL") or f"sqlite:///{home / 'deployments' / 'history.db'}"
    return Storage(
        home=home,
        dagster_home=dagster_home,
        mlflow_tracking_uri=tracking,
        mlflow_artifact_root=artifacts,
        online_store_url=online,
        prediction_log_url=predictions,
        deployment_history_url=history,
        offline_store_url=env.get("MLOPS_OFFLINE_STORE_URL") or "",
        mlflow_ui_url=(env.get("MLOPS_MLFLOW_UI_URL") or "").rstrip("/"),
    )


def sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///path`` URL (None for other URLs and in-memory databases)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    path = url[len(prefix) :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None
