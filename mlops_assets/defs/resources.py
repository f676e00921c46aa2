"""Resources and IO: the project's config and storage, per-partition Parquet IO, and MLflow via dagster-mlflow."""

import json
import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import pandas as pd

from mlops_assets.config import MlopsConfig, load_config
from mlops_assets.data.batches import Stores
from mlops_assets.data.store import PartitionStore
from mlops_assets.storage import Storage, storage_from_env

if TYPE_CHECKING:
    from mlops_assets.registry.model_registry import ModelRegistry


class MlopsProject(dg.ConfigurableResource):
    """The validated ``mlops.yaml`` and the storage locations, decided once per run."""

    config_path: str | None = None

    @cached_property
    def config(self) -> MlopsConfig:
        return load_config(self.config_path)

    @cached_property
    def storage(self) -> Storage:
        return storage_from_env().ensure()

    @cached_property
    def stores(self) -> Stores:
        return Stores.at(self.storage.home, self.config.model.name)

    def registry(self) -> "ModelRegistry":
        """The model's registry on this project's storage (built once per run)."""
        return self._registry

    @cached_property
    def _registry(self) -> "ModelRegistry":
        from mlops_assets.registry.model_registry import ModelRegistry

        return ModelRegistry.from_config(self.config, self.storage)

    def champion_window(self) -> tuple[str, str] | None:
        """The champion's training window (first, last partition): the data contract's reference once one
        exists."""
        from mlops_assets.steps.ingest import champion_window

        return champion_window(self.registry())


PARTITION_IO = "partition_io"


class PartitionedParquetIOManager(dg.ConfigurableIOManager):
    """One Parquet file per partition under ``$MLOPS_HOME/<model>/<asset>/``.

    Partitioned assets output ``{partition_key: frame}`` (one run may cover many partitions); inputs load the
    requested partitions concatenated into one frame.
    """

    project: MlopsProject

    def _store(self, context: dg.OutputContext | dg.InputContext) -> PartitionStore:
        base = self.project.storage.home / self.project.config.model.name
        return PartitionStore(base / context.asset_key.path[-1])

    def handle_output(self, context: dg.OutputContext, obj: dict[str, pd.DataFrame]) -> None:
        if obj is None:
            return
        if not isinstance(obj, dict):
            raise TypeError(f"{context.asset_key.to_user_string()}: expected {{partition_key: DataFrame}}")
        store = self._store(context)
        for key, frame in obj.items():
            store.write(key, frame)
        context.add_output_metadata(
            {"partitions_written": len(obj), "path": dg.MetadataValue.path(str(store.root))}
        )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        keys = list(context.asset_partition_keys) if context.has_asset_partitions else None
        return self._store(context).read(keys)


HANDOFF_IO = "run_handoff_io"


class RunHandoffIOManager(dg.ConfigurableIOManager):
    """A small JSON hand-off between two steps (trained_model -> deployed_model), kept per run under
    ``$MLOPS_HOME/<model>/handoff/<run_id>/<asset>.json``.

    Dagster's default IO manager keeps one file per asset, shared by every run: two concurrent runs then promoted
    each other's models. Here a deploy step reads what its own run trained and gated. Re-executing a run from the
    deploy step reads the parent run's hand-off (Dagster names the run that produced the output); a run that
    deploys without training (deployed_model materialized alone) reads the hand-off of the run that made the newest
    materialization of the upstream asset, and the promotion step checks that version's gate record again.
    """

    project: MlopsProject

    def _path(self, run_id: str, asset_key: dg.AssetKey) -> Path:
        base = self.project.storage.home / self.project.config.model.name / "handoff"
        return base / run_id / f"{asset_key.path[-1]}.json"

    def handle_output(self, context: dg.OutputContext, obj: dict) -> None:
        if obj is None:
            return
        target = self._path(context.run_id, context.asset_key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(json.dumps(obj, default=str))
        os.replace(tmp, target)

    def load_input(self, context: dg.InputContext) -> dict:
        asset = context.asset_key.to_user_string()
        run_id = _producing_run(context)
        if run_id is None:
            event = context.instance.get_latest_materialization_event(context.asset_key)
            if event is None:
                raise dg.Failure(f"{asset} has never been materialized: nothing to hand on")
            run_id = event.run_id
        path = self._path(run_id, context.asset_key)
        if not path.is_file():
            raise dg.Failure(
                f"{asset}: run {run_id} left no hand-off at {path} (made before hand-offs were kept per run, or "
                "removed): materialize it again"
            )
        return json.loads(path.read_text())


def _producing_run(context: dg.InputContext) -> str | None:
    """The run that produced the input in this run's lineage (this run, or its parent on a re-execution), or None
    when the input is an asset this run did not compute."""
    from dagster._core.execution.context.output import RUN_ID_PLACEHOLDER

    upstream = context.upstream_output
    if upstream is None:
        return None
    try:
        run_id = upstream.run_id
    except dg.DagsterInvariantViolationError:
        return None
    # An asset loaded from storage rather than computed in this run's lineage gets Dagster's placeholder id.
    return None if run_id == RUN_ID_PLACEHOLDER else run_id


# dagster-mlflow's resource config (its CONFIG_SCHEMA), spelled out here: importing dagster_mlflow imports MLflow,
# which a code location would otherwise pay on every load, sensor tick and UI reload.
MLFLOW_CONFIG_SCHEMA = {
    "experiment_name": dg.Field(dg.StringSource, is_required=True),
    "mlflow_tracking_uri": dg.Field(dg.Noneable(dg.StringSource), default_value=None, is_required=False),
    "parent_run_id": dg.Field(dg.Noneable(str), default_value=None, is_required=False),
    "mlflow_run_id": dg.Field(dg.Noneable(str), default_value=None, is_required=False),
    "env": dg.Field(dg.Permissive()),
    "env_to_tag": dg.Field(dg.Noneable(list), default_value=None, is_required=False),
    "extra_tags": dg.Field(dg.Permissive()),
}


@dg.resource(
    config_schema=MLFLOW_CONFIG_SCHEMA,
    required_resource_keys={"project"},
    description="MLflow tracking through dagster-mlflow, artifacts in MLOPS_HOME.",
)
def mlflow_tracking(context):
    """dagster-mlflow's resource, with the experiment created first so its artifacts land where storage says
    (MLflow's default is ``./mlruns`` in the working directory), and the MLflow run ended with the step."""
    import mlflow
    from dagster_mlflow.resources import MlFlow

    project: MlopsProject = context.resources.project
    storage = project.storage
    registry = project.registry()
    name = context.resource_config["experiment_name"]
    if registry.experiment_name != name:
        raise ValueError(f"experiment_name must be {registry.experiment_name!r}, got {name!r}")
    registry.ensure_experiment()
    mlflow.set_tracking_uri(storage.mlflow_tracking_uri)
    tracker = MlFlow(context)
    yield tracker
    # A step that failed has already ended its MLflow run as FAILED (see trained_model); a run still open here
    # succeeded. Left open, MLflow would show it RUNNING forever.
    if mlflow.active_run() is not None:
        mlflow.end_run(status="FINISHED")
