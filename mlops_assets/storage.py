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

    @property
    def offline_store(self) -> Path:
        return self.home / "offline_store"

    @property
    def quarantine(self) -> Path:
        return self.home / "quarantine"

    @property
    def deployments(self) -> Path:
        return self.home / "deployments"

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
    )
