"""MLflow registry access: register, verified load, champion/previous aliases, deployment history, rollback.

Kept light on import (``mlops-assets rollback`` must finish in seconds): the heavy pieces live in
:mod:`mlops_assets.registry.model_registry` and are imported where used.
"""

from mlops_assets.registry.errors import (
    ArtifactIntegrityError,
    NothingToRollBackError,
    PromotionError,
    RegistryError,
    UnknownVersionError,
)

__all__ = [
    "ArtifactIntegrityError",
    "NothingToRollBackError",
    "PromotionError",
    "RegistryError",
    "UnknownVersionError",
]
