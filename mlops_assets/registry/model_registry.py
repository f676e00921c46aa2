"""One registered model in MLflow: register a fitted pipeline, load it back through a verified path only, move
the ``champion`` / ``previous`` aliases under a lock, and keep the deployment history.

Safety of loading: models are serialized with skops, and the list of types trusted at load time is recorded as a
*registry* tag at registration (exactly what ``skops.io.get_untrusted_types`` lists for that model), together with
the sha256 of ``model.skops``. Loading downloads the file, checks the sha256 and hands skops that recorded list; the
MLmodel file's own list is never used, so a tampered artifact cannot whitelist itself, and
``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` is never needed.

Heavy modules (mlflow.sklearn, skops, pandas) are imported inside the methods that need them, and MLflow itself
when :attr:`ModelRegistry.client` is first used. A registry made with ``light=True`` (``mlops-assets rollback``)
reads and moves aliases through :mod:`mlops_assets.registry.sql_aliases` when the tracking database allows it, and
then never imports MLflow.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlparse

from mlops_assets.registry.errors import (
    ApprovalError,
    ArtifactIntegrityError,
    ChampionChangedError,
    GateRefusedError,
    NothingToRollBackError,
    PromotionError,
    RegistryError,
    UnknownVersionError,
)
from mlops_assets.registry.guard import Clearance, Override, judge
from mlops_assets.registry.history import Approval, Deployment, DeploymentHistory, GateRecord, Shadow
from mlops_assets.registry.sql_aliases import SqlAliasStore, sql_alias_store
from mlops_assets.storage import Storage

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

    from mlops_assets.alerts import Alerter
    from mlops_assets.config import MlopsConfig
    from mlops_assets.registry.sql_aliases import VersionRow

CHAMPION = "champion"
PREVIOUS = "previous"
CHALLENGER = "challenger"

# Version tags written at registration.
TAG_SHA256 = "mlops.sha256"
TAG_TRUSTED_TYPES = "mlops.skops_trusted_types"
TAG_DATA_WINDOW = "mlops.data_window"
TAG_PARTITIONS = "mlops.partitions"
TAG_PARTITION_COUNT = "mlops.partition_count"
TAG_FEATURE_VERSION = "mlops.feature_version"
TAG_DAGSTER_RUN_ID = "mlops.dagster_run_id"

MODEL_ARTIFACT_PATH = "model"
MODEL_FILE = "model.skops"
# Partition keys are stored in full as an artifact; the tag holds them while they are short.
_MAX_PARTITION_TAG_CHARS = 4000


@contextmanager
def _global_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's process-wide tracking URI set to ``uri`` for the block, then restored exactly as it was -- the
    module's value and the ``MLFLOW_TRACKING_URI`` variable MLflow mirrors it into (MLflow's own
    ``_use_tracking_uri`` would leave the variable pointing at whatever store was set before)."""
    import os

    from mlflow.tracking._tracking_service import utils

    old_uri, old_env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    utils.set_tracking_uri(uri)
    try:
        yield
    finally:
        utils._tracking_uri = old_uri
        if old_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_env


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pip_requirements() -> list[str]:
    # Given explicitly: MLflow's inference spawns a subprocess that loads the model (seconds, and it would pull
    # in whatever the test process has imported). Versions of the modules actually imported, not dist metadata.
    import numpy
    import pandas
    import scipy
    import sklearn
    import skops

    mods = {"scikit-learn": sklearn, "skops": skops, "pandas": pandas, "numpy": numpy, "scipy": scipy}
    return [f"{dist}=={mod.__version__}" for dist, mod in mods.items()]


@dataclass(frozen=True)
class RegisteredVersion:
    """A model version created by :meth:`ModelRegistry.register`."""

    model_name: str
    version: str
    run_id: str
    sha256: str
    source: str
    trusted_types: list[str]
    model_id: str | None = None  # the MLflow 3 LoggedModel the version was registered from


@dataclass(frozen=True)
class LoadedModel:
    """A model loaded through the verified path, with where it came from."""

    model: Any
    model_name: str
    version: str
    run_id: str | None
    sha256: str
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ChampionInfo:
    """The current champion: its version, run, metrics (from its MLflow run) and tags."""

    model_name: str
    version: str
    run_id: str | None
    metrics: dict[str, float]
    tags: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "version": self.version,
            "run_id": self.run_id,
            "metrics": self.metrics,
            "tags": self.tags,
        }


class ModelRegistry:
    """The MLflow registered model ``model_name`` plus its deployment history.

    ``storage`` gives the tracking URI, artifact root and history URL (the caller decides it once: a command's
    context or the Dagster resource). Safe to use from several threads or processes: champion moves are serialized by the history's lock.

    ``light=True``: aliases, version lookups, run metrics and alias moves go straight to the tracking database
    (:mod:`~mlops_assets.registry.sql_aliases`) when it is one that module knows, so ``aliases``, ``get_version``,
    ``champion``, ``promote`` and ``rollback`` run without importing MLflow; everything else uses the client.
    """

    def __init__(
        self,
        model_name: str,
        storage: Storage,
        *,
        light: bool = False,
        feature_version: str | None = None,
        alerter: Alerter | None = None,
        approval_expires_after_s: float | None = None,
    ):
        self.model_name = model_name
        self.storage = storage
        self.history_store = DeploymentHistory(self.storage.deployment_history_url)
        self._sql: SqlAliasStore | None = sql_alias_store(self.storage.mlflow_tracking_uri) if light else None
        # The current feature version: the guard clears only versions trained on it (None: not checked, for a
        # registry built from a name alone; every project path builds it with from_config).
        self.feature_version = feature_version
        # Promotions, rollbacks and approvals are alerted (and recorded) through it; None: not alerted.
        self.alerter = alerter
        self.approval_expires_after_s = approval_expires_after_s

    @cached_property
    def client(self) -> MlflowClient:
        """The MLflow client on the tracking URI (also the registry URI), made on first use."""
        from mlflow.tracking import MlflowClient

        return MlflowClient(
            tracking_uri=self.storage.mlflow_tracking_uri, registry_uri=self.storage.mlflow_tracking_uri
        )

    @classmethod
    def from_config(cls, cfg: MlopsConfig, storage: Storage, *, light: bool = False) -> ModelRegistry:
        """The registry of ``cfg.model.name`` (``cfg`` is an :class:`~mlops_assets.config.MlopsConfig`), guarding
        the champion with ``cfg``'s current feature version and alerting per ``cfg.alerts``."""
        from mlops_assets.alerts import Alerter
        from mlops_assets.features.code_version import current_feature_version

        registry = cls(
            cfg.model.name,
            storage,
            light=light,
            feature_version=current_feature_version(cfg),
            approval_expires_after_s=cfg.approval.expires_after_seconds(),
        )
        # No channel configured: nothing to send, and nothing recorded as unsent.
        registry.alerter = Alerter(cfg.alerts, registry.history_store) if cfg.alerts.channels else None
        return registry

    # ------------------------------------------------------------------------------------ experiment & runs

    @property
    def experiment_name(self) -> str:
        return f"mlops_assets/{self.model_name}"

    def ensure_experiment(self) -> str:
        """The id of this model's experiment, created with an explicit artifact location under the artifact root
        (never MLflow's default ``./mlruns``)."""
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(self.experiment_name)
        if exp is not None:
            return exp.experiment_id
        location = f"{self.storage.mlflow_artifact_root.rstrip('/')}/{self.model_name}"
        try:
            return self.client.create_experiment(self.experiment_name, artifact_location=location)
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = self.client.get_experiment_by_name(self.experiment_name)  # created concurrently
            if exp is None:
                raise RegistryError(
                    f"MLflow says experiment '{self.experiment_name}' exists but cannot find it "
                    f"(deleted? restore or purge it in {self.storage.mlflow_tracking_uri})"
                ) from err
            return exp.experiment_id

    def _target_run(self, run_name: str | None) -> tuple[str, bool]:
        """The active MLflow run if there is one (dagster-mlflow's), else a new run of our own."""
        import mlflow
        from mlflow.exceptions import MlflowException

        active = mlflow.active_run()
        if active is not None:
            run_id = active.info.run_id
            try:
                run = self.client.get_run(run_id)
            except MlflowException as err:
                raise RegistryError(
                    f"the active MLflow run {run_id} is not in the tracking store "
                    f"{self.storage.mlflow_tracking_uri}: configure dagster-mlflow with the same "
                    "MLFLOW_TRACKING_URI as mlops_assets"
                ) from err
            root = self.storage.mlflow_artifact_root.rstrip("/")
            if not run.info.artifact_uri.startswith(root + "/"):
                # MLflow's default artifact location is ./mlruns in the working directory: never write there.
                raise RegistryError(
                    f"the active MLflow run {run_id} stores artifacts at {run.info.artifact_uri}, outside the "
                    f"artifact root {root}: start it in experiment '{self.experiment_name}' "
                    "(created by ModelRegistry.ensure_experiment with the right artifact location)"
                )
            return run_id, False
        run = self.client.create_run(self.ensure_experiment(), run_name=run_name)
        return run.info.run_id, True

    @contextmanager
    def _scratch(self) -> Iterator[Path]:
        """A temporary folder under MLOPS_HOME (nothing is written elsewhere), removed afterwards."""
        root = self.storage.home / "tmp"
        root.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(dir=root))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    # ------------------------------------------------------------------------------------ registration

    def register(
        self,
        pipeline: Any,
        *,
        input_example: Any,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        partitions: Sequence[str] | None = None,
        data_window: str | None = None,
        feature_version: str | None = None,
        dagster_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        json_artifacts: Mapping[str, Any] | None = None,
        file_artifacts: Mapping[str, bytes | str] | None = None,
        run_name: str | None = None,
        alias: str = CHALLENGER,
        datasets: Mapping[str, Any] | None = None,
        target: str | None = None,
    ) -> RegisteredVersion:
        """Log a fitted scikit-learn ``pipeline`` and register it as a new version carrying ``alias``.

        Logs into the active MLflow run when there is one, else into a new run (ended here); ``run_name`` names
        either. Records params, metrics, the model (skops, signature and ``input_example`` a few feature rows) as
        an MLflow 3 LoggedModel that is the run's output and the version's source, its sha256 and trusted types as
        version tags, the data window / partitions / feature version / Dagster run id as run and version tags,
        each ``json_artifacts`` value as ``<name>.json`` and each ``file_artifacts`` value (bytes or text) under
        its name (e.g. ``plots/roc_curve.png``, ``model_card.md``). ``datasets`` (context -> pandas frame, e.g.
        ``training``, ``holdout``) are logged as the run's dataset inputs with their digests, ``target`` their
        label column; metrics named ``<context>_<metric>`` are linked to that dataset and to the model.
        """
        if alias in (CHAMPION, PREVIOUS):
            # Those move only through the guard (move_champion), never at registration.
            raise ValueError(f"a new version cannot be registered with alias '{alias}': promote it instead")
        import mlflow.sklearn
        import skops.io
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric, Param, RunTag
        from mlflow.models import infer_signature

        trusted = sorted(skops.io.get_untrusted_types(data=skops.io.dumps(pipeline)))
        signature = infer_signature(input_example, pipeline.predict(input_example))
        if params is None:
            params = _scalar_params(pipeline)
        partitions = list(partitions or [])
        if data_window is None and partitions:
            data_window = f"{partitions[0]}..{partitions[-1]}"
        optional_tags: dict[str, Any] = {
            TAG_DATA_WINDOW: data_window,
            TAG_PARTITION_COUNT: str(len(partitions)) if partitions else None,
            TAG_FEATURE_VERSION: feature_version,
            TAG_DAGSTER_RUN_ID: dagster_run_id,
        }
        joined = ",".join(partitions)
        if partitions and len(joined) <= _MAX_PARTITION_TAG_CHARS:
            optional_tags[TAG_PARTITIONS] = joined
        optional_tags.update(tags or {})
        info_tags = {k: str(v) for k, v in optional_tags.items() if v is not None}

        run_id, own_run = self._target_run(run_name)
        model_id: str | None = None
        try:
            inputs = self._log_datasets(run_id, datasets or {}, target)
            with self._scratch() as tmp:
                model_dir = tmp / MODEL_ARTIFACT_PATH
                mlflow.sklearn.save_model(
                    pipeline,
                    str(model_dir),
                    serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
                    skops_trusted_types=trusted,
                    signature=signature,
                    input_example=input_example,
                    pip_requirements=_pip_requirements(),
                )
                sha = file_sha256(model_dir / MODEL_FILE)
                extra = tmp / "extra"
                extra.mkdir()
                if partitions:
                    (extra / "partitions.json").write_text(json.dumps(partitions))
                for name, obj in (json_artifacts or {}).items():
                    _safe_child(extra, f"{name}.json").write_text(json.dumps(obj, indent=2, default=str))
                for name, data in (file_artifacts or {}).items():
                    _write_child(extra, name, data)
                run = self.client.get_run(run_id)
                logged = self.client.create_logged_model(
                    run.info.experiment_id,
                    name=MODEL_ARTIFACT_PATH,
                    source_run_id=run_id,
                    params={k: str(v)[:6000] for k, v in params.items()},
                    tags=info_tags,
                    model_type="scikit-learn",
                )
                model_id = logged.model_id
                now = _now_ms()
                metric_rows = []
                for k, v in (metrics or {}).items():
                    if v is None:
                        continue
                    ds = inputs.get(k.split("_", 1)[0])
                    metric_rows.append(
                        Metric(
                            k,
                            float(v),
                            now,
                            0,
                            model_id=model_id,
                            dataset_name=ds.name if ds else None,
                            dataset_digest=ds.digest if ds else None,
                        )
                    )
                self.client.log_batch(
                    run_id,
                    metrics=metric_rows,
                    params=[Param(k, str(v)[:6000]) for k, v in params.items()],
                    tags=[RunTag(k, v) for k, v in info_tags.items()]
                    # dagster-mlflow names its run after the Dagster job; the model and its trigger say more.
                    + ([RunTag("mlflow.runName", run_name)] if run_name else []),
                )
                try:
                    self.client.log_model_artifacts(model_id, str(model_dir))
                    if any(extra.iterdir()):
                        self.client.log_artifacts(run_id, str(extra))
                except OSError as err:
                    # Name the store and the setting: a bare "[Errno 30] Read-only file system" does not say which.
                    raise RegistryError(
                        f"model '{self.model_name}': cannot write the model artifacts to "
                        f"{self.client.get_run(run_id).info.artifact_uri} (the artifact store, under "
                        f"MLOPS_ARTIFACT_ROOT={self.storage.mlflow_artifact_root}): {err}; nothing was registered"
                    ) from err
            self.client.finalize_logged_model(model_id, LoggedModelStatus.READY)
            self.client.log_outputs(run_id, [LoggedModelOutput(model_id, step=0)])
            source = logged.artifact_location.rstrip("/")
            self._ensure_registered_model()
            # A ``models:/<model_id>`` source is how MLflow links a version to its LoggedModel (the SQL registry
            # keeps no other link); MLflow resolves it to ``source`` as the version's storage location.
            # The SQL registry looks the LoggedModel up through MLflow's *global* tracking URI: pin it to ours, or
            # it would read (and create) a database in the working directory.
            with _global_tracking_uri(self.storage.mlflow_tracking_uri):
                mv = self.client.create_model_version(
                    self.model_name,
                    f"models:/{model_id}",
                    run_id=run_id,
                    tags=info_tags | {TAG_SHA256: sha, TAG_TRUSTED_TYPES: json.dumps(trusted)},
                    model_id=model_id,
                )
            self.client.set_registered_model_alias(self.model_name, alias, mv.version)
        except BaseException:
            if model_id is not None:
                self.client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)
            if own_run:
                self.client.set_terminated(run_id, status="FAILED")
            raise
        if own_run:
            self.client.set_terminated(run_id)
        return RegisteredVersion(
            model_name=self.model_name,
            version=str(mv.version),
            run_id=run_id,
            sha256=sha,
            source=source,
            trusted_types=trusted,
            model_id=model_id,
        )

    def _log_datasets(self, run_id: str, frames: Mapping[str, Any], target: str | None) -> dict[str, Any]:
        """Log each frame as a dataset input of ``run_id`` with its context (``training``, ``holdout``) and
        digest; returns context -> the MLflow dataset."""
        if not frames:
            return {}
        import mlflow.data.pandas_dataset
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        out: dict[str, Any] = {}
        for context, frame in frames.items():
            out[context] = mlflow.data.pandas_dataset.from_pandas(
                frame,
                name=f"{self.model_name}_{context}",
                targets=target if target in frame.columns else None,
            )
        self.client.log_inputs(
            run_id,
            datasets=[
                DatasetInput(ds._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
                for context, ds in out.items()
            ],
        )
        return out

    def _ensure_registered_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(self.model_name)
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    def log_artifact_bytes(self, run_id: str, name: str, data: bytes | str) -> None:
        """Store ``data`` as artifact ``name`` (may contain folders) of ``run_id``."""
        with self._scratch() as tmp:
            target = _write_child(tmp, name, data)
            parent = str(Path(name).parent)
            self.client.log_artifact(run_id, str(target), None if parent == "." else parent)

    def log_json(self, run_id: str, name: str, obj: Any) -> None:
        """Store ``obj`` as ``<name>.json`` in ``run_id`` (e.g. a reference data profile)."""
        self.log_artifact_bytes(run_id, f"{name}.json", json.dumps(obj, indent=2, default=str))

    def load_json(self, version: str | int, name: str) -> Any:
        """Read back ``<name>.json`` logged with ``version``'s run."""
        mv = self.get_version(version)
        if mv.run_id is None:
            raise UnknownVersionError(f"model '{self.model_name}' version {mv.version} has no run")
        with self._scratch() as tmp:
            path = self.client.download_artifacts(mv.run_id, f"{name}.json", str(tmp))
            return json.loads(Path(path).read_text())

    def ui_links(self, base_url: str, run_id: str, version: str | int) -> dict[str, str]:
        """Links into the MLflow UI served at ``base_url`` (no trailing slash): the run and the model version."""
        experiment = self.client.get_run(run_id).info.experiment_id
        name = quote(self.model_name, safe="")
        return {
            "mlflow_run": f"{base_url}/#/experiments/{experiment}/runs/{run_id}",
            "mlflow_model_version": f"{base_url}/#/models/{name}/versions/{version}",
        }

    def set_model_card(self, version: str | int, markdown: str) -> None:
        """Store the model card with the version: as its MLflow description and as ``model_card.md``."""
        mv = self.get_version(version)
        self.client.update_model_version(self.model_name, mv.version, description=markdown)
        if mv.run_id:
            self.log_artifact_bytes(mv.run_id, f"model_cards/v{mv.version}.md", markdown)

    # ------------------------------------------------------------------------------------ lookups

    def aliases(self) -> dict[str, str]:
        """alias -> version of the registered model ({} when the model is not registered yet)."""
        if self._sql is not None:
            return self._sql.aliases(self.model_name)
        from mlflow.exceptions import MlflowException

        try:
            rm = self.client.get_registered_model(self.model_name)
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise
        return {a: str(v) for a, v in (rm.aliases or {}).items()}

    def get_version(
        self, version: str | int | None = None, *, alias: str | None = None
    ) -> ModelVersion | VersionRow:
        """The MLflow ``ModelVersion`` for a version number or an alias; :class:`UnknownVersionError` if none."""
        if (version is None) == (alias is None):
            raise ValueError("give exactly one of version or alias")
        if alias is not None:
            target = self.aliases().get(alias)
            if target is None:
                raise UnknownVersionError(f"model '{self.model_name}' has no version with alias '{alias}'")
            version = target
        if self._sql is not None:
            row = self._sql.model_version(self.model_name, str(version))
            if row is None:
                raise UnknownVersionError(
                    f"model '{self.model_name}' has no version {version}{self._known_versions_hint()}"
                )
            return row
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version(self.model_name, str(version))
        except MlflowException as err:
            if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise UnknownVersionError(
                    f"model '{self.model_name}' has no version {version}{self._known_versions_hint()}"
                ) from None
            raise

    def versions(self) -> list[str]:
        """Every registered version number, oldest first."""
        if self._sql is not None:
            return self._sql.versions(self.model_name)
        return sorted(
            (str(mv.version) for mv in self.client.search_model_versions(f"name='{self.model_name}'")),
            key=int,
        )

    def _known_versions_hint(self) -> str:
        if self._sql is not None:
            versions = self._sql.versions(self.model_name)
            return self._versions_hint(versions)
        from mlflow.exceptions import MlflowException

        try:
            versions = sorted(
                (mv.version for mv in self.client.search_model_versions(f"name='{self.model_name}'")), key=int
            )
        except MlflowException:
            return ""
        return self._versions_hint(versions)

    @staticmethod
    def _versions_hint(versions: Sequence[Any]) -> str:
        return (
            f" (registered versions: {', '.join(map(str, versions))})"
            if versions
            else " (no version is registered)"
        )

    def _run_metrics(self, run_id: str | None) -> dict[str, float]:
        """The latest value of each metric of ``run_id`` ({} without a run)."""
        if not run_id:
            return {}
        if self._sql is not None:
            return self._sql.run_metrics(run_id)
        return dict(self.client.get_run(run_id).data.metrics)

    def version_metrics(self, version: str | int) -> dict[str, float]:
        """The metrics ``version``'s run recorded (holdout and validation, as registered)."""
        return self._run_metrics(self.get_version(version).run_id)

    def champion(self) -> ChampionInfo | None:
        """The current champion, or ``None`` when there is none."""
        version = self.aliases().get(CHAMPION)
        if version is None:
            return None
        mv = self.get_version(version)
        metrics = self._run_metrics(mv.run_id)
        return ChampionInfo(
            model_name=self.model_name,
            version=str(mv.version),
            run_id=mv.run_id,
            metrics=dict(metrics),
            tags=dict(mv.tags or {}),
        )

    # ------------------------------------------------------------------------------------ verified load

    def load(self, version: str | int | None = None, *, alias: str | None = None) -> LoadedModel:
        """Load a version (or the version an alias points to) after verifying its sha256.

        Raises :class:`ArtifactIntegrityError` when the artifact's sha256 differs from the registered one or when
        the version carries no sha256/trusted-types tags (not registered through :meth:`register`).
        """
        import skops.io

        mv = self.get_version(version, alias=alias)
        data, trusted = self._verified_bytes(mv)
        # The very bytes that were hashed are deserialized (no re-read between check and load).
        model = skops.io.loads(data, trusted=trusted)
        return LoadedModel(
            model=model,
            model_name=self.model_name,
            version=str(mv.version),
            run_id=mv.run_id,
            sha256=hashlib.sha256(data).hexdigest(),
            tags=dict(mv.tags or {}),
        )

    def verify(self, version: str | int) -> str:
        """The sha256 of ``version``'s artifact once it matches the one recorded at registration (nothing is
        deserialized). Raises :class:`ArtifactIntegrityError` naming the version when it differs, the artifact is
        missing or the version was not registered through :meth:`register`."""
        data, _ = self._verified_bytes(self.get_version(version))
        return hashlib.sha256(data).hexdigest()

    def _verified_bytes(self, mv: ModelVersion | VersionRow) -> tuple[bytes, list[str]]:
        """The artifact bytes of ``mv`` and its recorded trusted types, after checking the bytes' sha256."""
        tags = dict(mv.tags or {})
        expected = tags.get(TAG_SHA256)
        trusted_json = tags.get(TAG_TRUSTED_TYPES)
        if not expected or trusted_json is None or not mv.source:
            raise ArtifactIntegrityError(
                f"model '{self.model_name}' version {mv.version} has no recorded sha256/trusted types or no "
                "artifact source: it was not registered through mlops_assets and is refused"
            )
        location = mv.source
        if location.startswith("models:/"):
            # A LoggedModel (MLflow 3): the registry resolved its artifact location when the version was made (the
            # light registry read it with the version's row; MLflow's client asks for it).
            location = getattr(mv, "storage_location", None) or self.client.get_model_version_download_uri(
                self.model_name, str(mv.version)
            )
        try:
            data = self._read_model_bytes(location)
        except FileNotFoundError as err:
            raise ArtifactIntegrityError(
                f"model '{self.model_name}' version {mv.version}: artifact {location}/{MODEL_FILE} is missing "
                f"({err.strerror or err}); the model is refused"
            ) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise ArtifactIntegrityError(
                f"model '{self.model_name}' version {mv.version}: artifact {location}/{MODEL_FILE} has sha256 "
                f"{actual}, registered {expected}; the model is refused"
            )
        return data, json.loads(trusted_json)

    def _read_model_bytes(self, source: str) -> bytes:
        """The bytes of ``model.skops`` under ``source``: read in place for a local (file:) artifact store,
        downloaded through MLflow for any other."""
        parsed = urlparse(source)
        if parsed.scheme in ("", "file"):
            return (Path(unquote(parsed.path)) / MODEL_FILE).read_bytes()
        import mlflow.artifacts

        with self._scratch() as tmp:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{source.rstrip('/')}/{MODEL_FILE}",
                dst_path=str(tmp),
                tracking_uri=self.storage.mlflow_tracking_uri,
            )
            return Path(local).read_bytes()

    # ------------------------------------------------------------------------------------ the champion guard

    def _require_registered(self, version: str) -> ModelVersion | VersionRow:
        mv = self.get_version(version)
        if not (mv.tags or {}).get(TAG_SHA256):
            raise ArtifactIntegrityError(
                f"model '{self.model_name}' version {version} has no recorded sha256: it was not registered "
                "through mlops_assets and cannot become champion"
            )
        return mv

    def _require_intact(self, version: str, current: str | None, action: str) -> ModelVersion | VersionRow:
        """``version``, once registered through mlops_assets with its artifact's sha256 as recorded: a champion
        must load wherever it is served. Refused naming the version, with the champion left as ``current``."""
        mv = self._require_registered(version)
        try:
            self._verified_bytes(mv)
        except ArtifactIntegrityError as err:
            stays = f"version {current}" if current else "none"
            raise ArtifactIntegrityError(f"{err}; {action} refused, the champion stays {stays}") from None
        return mv

    def clearance(self, version: str | int, mv: ModelVersion | VersionRow | None = None) -> Clearance:
        """The guard's verdict on ``version``: a passing gate record, for the current feature version (when this
        registry knows it: built with :meth:`from_config`)."""
        version = str(version)
        mv = mv if mv is not None else self.get_version(version)
        return judge(
            self.model_name,
            version,
            self.latest_gate_results(version),
            (mv.tags or {}).get(TAG_FEATURE_VERSION),
            self.feature_version,
        )

    def move_champion(
        self,
        version: str | int | None,
        *,
        reason: str,
        by: str,
        run_id: str | None = None,
        metrics: Mapping[str, float] | None = None,
        override: Override | None = None,
        kind: str = "promoted",
        expected_champion: str | None = None,
    ) -> Deployment:
        """The only writer of the ``champion`` alias: move it to ``version`` (``None``: back to ``previous``).

        Under the promotion lock: the target must be registered through mlops_assets (a recorded sha256, never
        overridable) and cleared by the guard (:meth:`clearance`), unless ``override`` names a person and a reason.
        The target's artifact must match its recorded sha256 (:class:`ArtifactIntegrityError` otherwise), and with
        ``expected_champion`` the champion must not have changed before the lock was held
        (:class:`ChampionChangedError`). ``previous`` moves to the old champion, and the history row records ``by``, the override reason, the gate
        record relied on and the model's sha256. After the commit an alert (``kind``: ``promoted`` or
        ``rolled_back``) is sent and recorded against that row; its delivery never fails the move.

        Raises :class:`GateRefusedError` (the champion untouched), :class:`PromotionError` when the target is
        already champion, :class:`NothingToRollBackError` when there is no previous version.
        """
        if not by or not by.strip():
            raise ValueError("a champion move names who or what made it (by=...)")
        with self.history_store.locked(self.model_name) as txn:
            aliases = self.aliases()
            current = aliases.get(CHAMPION)
            if expected_champion is not None and current != str(expected_champion):
                raise ChampionChangedError(
                    self._changed_message(str(expected_champion), current, txn.latest())
                )
            if version is None:
                target = aliases.get(PREVIOUS)
                if target is None:
                    raise NothingToRollBackError(
                        f"model '{self.model_name}' has no previous champion to roll back to"
                        + ("" if current else " (and no champion at all)")
                        + "; use --to VERSION to choose one"
                    )
            else:
                target = str(version)
            if target == current:
                what = "nothing to roll back" if kind == "rolled_back" else "nothing to promote"
                raise PromotionError(
                    f"model '{self.model_name}' version {target} is already champion: {what}"
                )
            mv = self._require_intact(target, current, "rollback" if kind == "rolled_back" else "promotion")
            verdict = self.clearance(target, mv)
            if not verdict.ok and override is None:
                raise GateRefusedError(
                    f"{verdict.explain()}; the champion stays "
                    + (f"version {current}" if current else "unset")
                    + " (a person can force it with an override and a reason)",
                    verdict,
                )
            if metrics is None:
                metrics = self._run_metrics(mv.run_id)
            self._move_aliases(target, current)
            record = dict(verdict.gate_record or {}) | {"cleared": verdict.ok, "problems": verdict.problems}
            deployment = txn.append(
                version=target,
                previous_version=current,
                reason=reason,
                run_id=run_id,
                metrics=metrics,
                moved_by=by,
                override_reason=None if verdict.ok or override is None else override.reason,
                gate_record=record,
                sha256=(mv.tags or {}).get(TAG_SHA256),
            )
        self._alert_move(deployment, kind, verdict)
        return deployment

    def notify(self, kind: str, summary: str, **fields: Any) -> None:
        """Alert ``kind`` about this model (recorded and sent by the alerter); nothing when none is set."""
        if self.alerter is None:
            return
        from mlops_assets.alerts import AlertEvent

        self.alerter.notify(AlertEvent(kind=kind, model=self.model_name, summary=summary, **fields))

    def _alert_move(self, d: Deployment, kind: str, verdict: Clearance) -> None:
        was = f"version {d.previous_version}" if d.previous_version else "no champion"
        what = "rolled back to" if kind == "rolled_back" else "promoted"
        summary = (
            f"{self.model_name}: version {d.version} {what} champion (was {was}) by {d.moved_by}: {d.reason}"
        )
        if d.override_reason:
            summary += f". GATES OVERRIDDEN ({'; '.join(verdict.problems)}): {d.override_reason}"
        self.notify(
            kind,
            summary,
            severity="critical" if d.override_reason else None,
            version=d.version,
            run_id=d.run_id,
            details={"previous_version": d.previous_version, "moved_by": d.moved_by, "reason": d.reason}
            | ({"override_reason": d.override_reason} if d.override_reason else {}),
            deployment_id=d.id,
        )
        if d.previous_version and d.previous_version != d.version and self.alerter is not None:
            from mlops_assets.alerts.checks import freshness_key

            # A champion past its freshness limit is an incident (opened by the freshness sensor's request); it
            # ends when another version replaces it: the all-clear goes out if the incident is open.
            self.alerter.resolve(
                self.model_name,
                freshness_key(d.previous_version),
                f"{self.model_name}: version {d.previous_version}, past its freshness limit, is no longer "
                f"champion (version {d.version} is)",
                version=d.previous_version,
                run_id=d.run_id,
                details={"champion": d.version},
            )

    def serving_clearance(self, version: str | int, sha256: str | None = None) -> Clearance:
        """May the service serve ``version`` (the model it loaded has ``sha256``)? Cleared by the gates, or moved
        there by a recorded override; and the model is the one the guard moved to (same sha256) when that was
        recorded. An alias moved by hand in MLflow to an ungated version is refused here."""
        version = str(version)
        verdict = self.clearance(version)
        moves = [d for d in self.history() if d.version == version and d.moved_by is not None]
        last = moves[-1] if moves else None
        problems = list(verdict.problems)
        if problems and last is not None and last.override_reason:
            problems = []  # a person overrode the gates for it, recorded in the history
        if sha256 is not None and last is not None and last.sha256 and last.sha256 != sha256:
            problems.append(
                f"its artifact's sha256 {sha256} is not the {last.sha256} recorded when it was moved"
            )
        return Clearance(self.model_name, version, problems, verdict.gate_record)

    # ------------------------------------------------------------------------------------ promotion & rollback

    def promote(
        self,
        version: str | int,
        reason: str,
        run_id: str | None = None,
        metrics: Mapping[str, float] | None = None,
        *,
        by: str = "python-api",
        override: Override | None = None,
    ) -> Deployment:
        """Make ``version`` the champion through the guard (:meth:`move_champion`): ``previous`` moves to the
        old champion and the change is appended to the history, serialized by the promotion lock.

        ``run_id`` is the run that decided it (e.g. the Dagster run id); ``metrics`` default to the version's
        MLflow run metrics. Raises :class:`GateRefusedError` without a passing gate record (and no override),
        :class:`PromotionError` if the version is already champion.
        """
        return self.move_champion(
            version, reason=reason, by=by, run_id=run_id, metrics=metrics, override=override, kind="promoted"
        )

    def promote_if_passed(
        self,
        version: str | int,
        gate_results: Sequence[Any],
        reason: str,
        run_id: str | None = None,
        metrics: Mapping[str, float] | None = None,
        *,
        by: str = "python-api",
    ) -> Deployment | None:
        """Record ``gate_results`` for ``version``, then promote it only if every one passed.

        Returns the new :class:`Deployment`, or ``None`` when a gate failed (the champion is left untouched). An
        empty ``gate_results`` is refused: no gate evaluated is not the same as every gate passed.
        """
        if not gate_results:
            raise PromotionError(
                f"no gate results for model '{self.model_name}' version {version}: not promoted"
            )
        self.record_gate_results(version, gate_results, run_id=run_id)
        rows = [r.to_dict() if hasattr(r, "to_dict") else dict(r) for r in gate_results]
        if not all(r.get("passed") is True for r in rows):
            return None
        return self.promote(version, reason, run_id=run_id, metrics=metrics, by=by)

    def _move_aliases(self, version: str, current: str | None) -> None:
        # Called by move_champion only (a test keeps it so). `previous` first: if the second call failed, the
        # champion would be unchanged and `previous` would point at it, which is harmless; the history
        # transaction is rolled back either way.
        if current is not None:
            self._set_alias(PREVIOUS, current)
        self._set_alias(CHAMPION, version)

    def _set_alias(self, alias: str, version: str) -> None:
        if self._sql is None:
            self.client.set_registered_model_alias(self.model_name, alias, version)
        elif not self._sql.set_alias(self.model_name, alias, version):
            raise UnknownVersionError(f"model '{self.model_name}' has no version {version}")

    def rollback(
        self,
        to: str | int | None = None,
        *,
        reason: str = "rollback",
        run_id: str | None = None,
        expected_champion: str | None = None,
        by: str = "python-api",
        override: Override | None = None,
    ) -> Deployment:
        """Move the champion back to the ``previous`` version (or to ``to``) through the guard, recorded with
        ``reason``.

        The old champion becomes ``previous``, so a second rollback without ``to`` undoes the first; use ``to`` to
        go further back. Raises :class:`GateRefusedError` for a version the gates do not clear (unless
        ``override``), :class:`NothingToRollBackError` when there is no previous champion,
        :class:`UnknownVersionError` when ``to`` does not exist and :class:`ArtifactIntegrityError` when the
        target's artifact is not the one registered. With ``expected_champion`` (the champion the caller saw), a
        champion that changed before the lock was taken (two rollbacks at once) raises
        :class:`ChampionChangedError` naming the change, and nothing moves.
        """
        if to is not None:
            self._require_registered(str(to))
        return self.move_champion(
            to,
            reason=reason,
            by=by,
            run_id=run_id,
            override=override,
            kind="rolled_back",
            expected_champion=expected_champion,
        )

    # ------------------------------------------------------------------------------------ approval

    def request_approval(self, version: str | int, run_id: str | None = None) -> Approval:
        """Put a cleared challenger in front of a person instead of promoting it (``approval.required``)."""
        version = str(version)
        verdict = self.clearance(version)
        if not verdict.ok:
            raise GateRefusedError(f"{verdict.explain()}; not put up for approval", verdict)
        expires_at = None
        if self.approval_expires_after_s is not None:
            expires_at = (datetime.now(UTC) + timedelta(seconds=self.approval_expires_after_s)).isoformat(
                timespec="milliseconds"
            )
        approval = self.history_store.request_approval(self.model_name, version, run_id, expires_at)
        self.notify(
            "approval_requested",
            f"{self.model_name}: version {version} passed every gate and awaits approval "
            f"(mlops-assets approve {version} --by NAME, or reject)"
            + (f"; expires {expires_at}" if expires_at else ""),
            version=version,
            run_id=run_id,
        )
        return approval

    def awaiting_approval(self) -> list[Approval]:
        """Requests still awaiting a decision (not expired), oldest first."""
        return [a for a in self.history_store.approvals(self.model_name) if a.state == "awaiting"]

    def approvals(self, version: str | int | None = None) -> list[Approval]:
        return self.history_store.approvals(self.model_name, None if version is None else str(version))

    def _pending_request(self, version: str) -> Approval:
        requests = self.history_store.approvals(self.model_name, version)
        if not requests:
            raise ApprovalError(f"model '{self.model_name}' version {version} was never put up for approval")
        latest = requests[-1]
        if latest.state == "expired":
            raise ApprovalError(
                f"model '{self.model_name}' version {version}: the approval request expired at "
                f"{latest.expires_at}; a new run puts a challenger up again"
            )
        if latest.state != "awaiting":
            raise ApprovalError(
                f"model '{self.model_name}' version {version} was already {latest.state} by "
                f"{latest.decided_by} at {latest.decided_at}"
            )
        return latest

    def approve(self, version: str | int, *, by: str, reason: str | None = None) -> Deployment:
        """A person approves ``version``: it becomes champion through the guard, and the decision is recorded."""
        version = str(version)
        request = self._pending_request(version)
        d = self.move_champion(
            version,
            reason=f"approved by {by}" + (f": {reason}" if reason else ""),
            by=by,
            run_id=request.run_id,
            kind="promoted",
        )
        assert request.id is not None
        self.history_store.decide_approval(request.id, "approved", by, reason)
        return d

    def reject(self, version: str | int, *, by: str, reason: str | None = None) -> Approval:
        """A person rejects ``version``: the champion is untouched, the decision recorded and alerted."""
        version = str(version)
        request = self._pending_request(version)
        assert request.id is not None
        self.history_store.decide_approval(request.id, "rejected", by, reason)
        self.notify(
            "approval_decided",
            f"{self.model_name}: version {version} rejected by {by}"
            + (f": {reason}" if reason else "")
            + "; the champion is unchanged",
            version=version,
            details={"decision": "rejected", "by": by, "reason": reason},
        )
        return self.history_store.approvals(self.model_name, version)[-1]

    # ------------------------------------------------------------------------------------ shadow

    def start_shadow(self, version: str | int, *, reason: str, run_id: str | None = None) -> Shadow:
        """Run ``version`` in shadow beside the champion (``rollout.mode: shadow``) instead of promoting it: only a
        version the gates clear, and only while there is a champion to compare it with. A shadow still running is
        superseded."""
        version = str(version)
        verdict = self.clearance(version)
        if not verdict.ok:
            raise GateRefusedError(f"{verdict.explain()}; not put in shadow", verdict)
        champion = self.aliases().get(CHAMPION)
        if champion is None:
            raise ValueError(
                f"model '{self.model_name}' has no champion to run version {version} in shadow of"
            )
        shadow = self.history_store.start_shadow(self.model_name, version, champion, reason, run_id)
        self.notify(
            "shadow_started",
            f"{self.model_name}: version {version} passed every gate and runs in shadow of champion {champion}; "
            "it is promoted if its comparison with the champion passes",
            version=version,
            run_id=run_id,
            details={"trigger": reason, "champion_version": champion},
        )
        return shadow

    def active_shadow(self) -> Shadow | None:
        """The shadow running now, if any."""
        return self.history_store.active_shadow(self.model_name)

    def shadows(self) -> list[Shadow]:
        return self.history_store.shadows(self.model_name)

    def end_shadow(self, shadow: Shadow, state: str, verdict: dict[str, Any] | None = None) -> bool:
        """Record how ``shadow`` ended (``promoted``, ``refused``); a refusal is alerted. False when it had already
        ended (judged by another run, or superseded)."""
        ended = self.history_store.end_shadow(int(shadow.id or 0), state, verdict)
        if ended and state == "refused":
            failed = "; ".join(
                str(c.get("message")) for c in (verdict or {}).get("criteria", []) if c.get("passed") is False
            )
            self.notify(
                "shadow_refused",
                f"{self.model_name}: version {shadow.version} failed its shadow comparison with champion "
                f"{shadow.champion_version} and is not promoted: {failed or 'see the check'}",
                version=shadow.version,
                details={"trigger": shadow.reason, "verdict": verdict},
            )
        return ended

    def _changed_message(self, expected: str, current: str | None, latest: Deployment | None) -> str:
        now = f"version {current}" if current else "no champion"
        how = (
            f" since {latest.deployed_at} ({latest.reason}"
            + (f", run {latest.run_id}" if latest.run_id else "")
            + ")"
            if latest is not None and latest.version == current
            else ""
        )
        return (
            f"model '{self.model_name}': the champion changed while this rollback waited for the promotion lock: "
            f"it was version {expected} when the rollback began, it is {now}{how}; this rollback moved nothing "
            f"(`mlops-assets status` shows the history; roll back again to act on {now})"
        )

    def history(self, limit: int | None = None) -> list[Deployment]:
        """Deployment history, oldest first."""
        return self.history_store.entries(self.model_name, limit)

    def record_gate_results(
        self, version: str | int, results: Sequence[Any], run_id: str | None = None
    ) -> GateRecord:
        """Keep the gate results of ``version`` (``GateResult`` objects or dicts) for ``status``."""
        rows = [r.to_dict() if hasattr(r, "to_dict") else dict(r) for r in results]
        return self.history_store.record_gate_results(self.model_name, str(version), rows, run_id)

    def latest_gate_results(self, version: str | int | None = None) -> GateRecord | None:
        return self.history_store.latest_gate_results(
            self.model_name, None if version is None else str(version)
        )


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def _write_child(root: Path, name: str, data: bytes | str) -> Path:
    """Write ``data`` (bytes or text) to ``root/name`` (folders created; ``name`` must stay inside ``root``)."""
    target = _safe_child(root, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        target.write_bytes(data)
    else:
        target.write_text(data)
    return target


def _safe_child(root: Path, name: str) -> Path:
    target = (root / name).resolve()
    if not target.is_relative_to(root.resolve()):
        raise ValueError(f"artifact name {name!r} escapes the artifact folder")
    return target


def _scalar_params(pipeline: Any) -> dict[str, Any]:
    """The final estimator's scalar hyperparameters (objects are not params)."""
    est = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    return {
        k: v
        for k, v in est.get_params(deep=False).items()
        if v is None or isinstance(v, str | int | float | bool)
    }
