"""Which offline and online store a configuration uses (one place, shared by the asset, the API and serving)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from mlops_assets.features.offline import OfflineStore
from mlops_assets.features.online import OnlineStore

if TYPE_CHECKING:
    from mlops_assets.config import MlopsConfig

_ONLINE: dict[tuple[str, str], OnlineStore] = {}
_LOCK = threading.Lock()


def store_name(cfg: MlopsConfig) -> str:
    """Table / folder name of the model's features: ``<model.name>_features``."""
    return f"{cfg.model.name}_features"


def offline_store(cfg: MlopsConfig, storage: Any = None) -> OfflineStore:
    """The offline store for ``cfg`` (Parquet under ``$MLOPS_HOME/offline_store`` unless a URL is configured)."""
    return OfflineStore.from_storage(storage, name=store_name(cfg))


def online_store(cfg: MlopsConfig, storage: Any = None) -> OnlineStore:
    """The online store for ``cfg`` at ``storage.online_store_url``; one instance per URL and name."""
    if storage is None:
        from mlops_assets.settings import storage_from_env

        storage = storage_from_env()
    key = (storage.online_store_url, store_name(cfg))
    with _LOCK:
        store = _ONLINE.get(key)
        if store is None:
            store = _ONLINE[key] = OnlineStore(key[0], name=key[1])
        return store
