"""Registry errors: each names the model, the version and what to do about it."""

from __future__ import annotations


class RegistryError(RuntimeError):
    """Base class of every registry error."""


class ArtifactIntegrityError(RegistryError):
    """A model artifact whose sha256 differs from the one recorded at registration (or has none): refused."""


class UnknownVersionError(RegistryError, LookupError):
    """A version (or alias) that the registered model does not have."""


class NothingToRollBackError(RegistryError):
    """Rollback asked for with no previous champion to go back to."""


class PromotionError(RegistryError):
    """A promotion that cannot be carried out (for example: the version is already champion)."""


class ChampionChangedError(PromotionError):
    """The champion moved between the moment a change was asked for and the moment it held the promotion lock (a
    concurrent rollback or promotion): nothing was moved."""


class RegistryUnavailableError(RegistryError):
    """A store of the registry (the tracking database, the deployment history) cannot be reached."""
