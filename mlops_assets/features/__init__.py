"""Feature definitions, the point-in-time engine, and the offline and online stores (no Dagster here).

One declarative definition per feature (``features:`` in ``mlops.yaml``, see :mod:`.settings`); one engine
(:mod:`.engine`) computes them for training (:func:`compute_features`) and for serving
(:func:`complete_features`); the stores keep what each side needs.
"""

from mlops_assets.features.definitions import (
    ENGINE_VERSION,
    FeatureDefinition,
    FeatureDefinitionError,
    feature_registry,
    features_code_version,
    lookback,
    model_feature_columns,
)
from mlops_assets.features.engine import FeatureInputError, compute_features
from mlops_assets.features.offline import OfflineStore, OfflineStoreError
from mlops_assets.features.online import OnlineStore, OnlineStoreError, complete_features
from mlops_assets.features.settings import FeaturesConfig, FeatureSpec
from mlops_assets.features.stores import offline_store, online_store, store_name

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
    "feature_registry",
    "features_code_version",
    "lookback",
    "model_feature_columns",
    "offline_store",
    "online_store",
    "store_name",
]
