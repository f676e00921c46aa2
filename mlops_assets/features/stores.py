"""Which offline and online store a configuration uses (one place, shared by the asset, the API and serving)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from mlops_assets.features.offline import OfflineStore
from mlops_assets.features.online import OnlineStore

if TYPE_CHECKING:
    from mlops_assets.config import MlopsConfig
    from mlops_assets.storage import Storage

_ONLINE: dict[tuple[str, str], OnlineStore] = {}
_LOCK = threading.Lock()


def store_name(cfg: MlopsConfig) -> str:
    """Table / folder name of the model's features: ``<model.name>_features``."""
    return f"{cfg.model.name}_features"


def offline_store(cfg: MlopsConfig, storage: Storage) -> OfflineStore:
    """The offline store for ``cfg`` (Parquet under ``$MLOPS_HOME/offline_store`` unless a URL is configured)."""
    return OfflineStore.from_storage(storage, name=store_name(cfg))


def online_store(cfg: MlopsConfig, storage: Storage) -> OnlineStore:
    """The online store for ``cfg`` at ``storage.online_store_url``; one instance per URL and name."""
    url = storage.online_store_url
    key = (url, store_name(cfg))
    with _LOCK:
        store = _ONLINE.get(key)
        if store is None:
            store = _ONLINE[key] = OnlineStore(key[0], name=key[1])
        return store
