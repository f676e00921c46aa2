"""Feature definitions, the point-in-time engine, and the offline and online stores (no Dagster here).

One declarative definition per feature (``features:`` in ``mlops.yaml``, see :mod:`.settings`); one engine
(:mod:`.engine`) computes them for training (:func:`compute_features`) and for serving
(:func:`complete_features`); the stores keep what each side needs.
"""

import importlib
from typing import Any

# Imported on first use: mlops_assets.config reads .settings at start-up, and light commands (rollback, status)
# should not pay for pandas, SQLAlchemy and the engine.
_EXPORTS = {
    "ENGINE_VERSION": "code_version",
    "FeatureDefinition": "feature_set",
    "FeatureDefinitionError": "code_version",
    "current_feature_version": "code_version",
    "feature_registry": "feature_set",
    "features_code_version": "feature_set",
    "lookback": "feature_set",
    "model_feature_columns": "feature_set",
    "FeatureInputError": "engine",
    "compute_features": "engine",
    "OfflineStore": "offline",
    "OfflineStoreError": "offline",
    "OnlineStore": "online",
    "OnlineStoreError": "online",
    "complete_features": "online",
    "FeaturesConfig": "settings",
    "FeatureSpec": "settings",
    "offline_store": "stores",
    "online_store": "stores",
    "store_name": "stores",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mlops_assets.features' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mlops_assets.features.{module}"), name)


__all__ = [
    "ENGINE_VERSION",
    "FeatureDefinition",
    "FeatureDefinitionError",
    "FeatureInputError",
    "FeatureSpec",
    "FeaturesConfig",
    "OfflineStore",
    "OfflineStoreError",
    "OnlineStore",
    "OnlineStoreError",
    "complete_features",
    "compute_features",
    "current_feature_version",
    "feature_registry",
    "features_code_version",
    "lookback",
    "model_feature_columns",
    "offline_store",
    "online_store",
    "store_name",
]
