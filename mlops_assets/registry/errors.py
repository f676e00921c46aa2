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


class GateRefusedError(PromotionError):
    """A champion move refused by the guard: the version has no passing gate record for the current feature
    version, and no override was given. ``clearance`` says what is missing."""

    def __init__(self, message: str, clearance: object):
        super().__init__(message)
        self.clearance = clearance


class ApprovalError(RegistryError):
    """An approval or rejection that cannot be recorded (no request for that version, already decided, expired)."""
