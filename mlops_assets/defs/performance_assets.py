"""model_performance: the live metrics of labeled predictions, one partition per period like the data."""

import dagster as dg
import pandas as pd

from mlops_assets.config import MlopsConfig
from mlops_assets.defs.resources import PARTITION_IO, MlopsProject


def build_performance_assets(cfg: MlopsConfig, partitions_def: dg.PartitionsDefinition, prefix: list[str]):
    deployed_key = dg.AssetKey([*prefix, "deployed_model"])

    @dg.asset(
        key=[*prefix, "model_performance"],
        deps=[deployed_key],
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        io_manager_key=PARTITION_IO,
        group_name=prefix[-1],
        kinds={"pandas"},
        description="Live metrics per period (by event time) of the predictions the service logged and that "
        "received labels through POST /feedback: ROC AUC (null with one class), accuracy, F1, precision, recall, "
        "and which model versions answered. The performance trigger reads the same numbers.",
    )
    def model_performance(context: dg.AssetExecutionContext, project: MlopsProject):
        from mlops_assets.monitoring.performance_log import live_performance

        keys = context.partition_keys
        metrics = live_performance(cfg, project.storage.prediction_log_url, partitions=keys)
        out = {}
        for key in keys:
            m = dict(metrics[key])
            m["model_versions"] = ",".join(m.get("model_versions") or [])
            out[key] = pd.DataFrame([{"partition": key, **m}])
        labeled = {k: m for k, m in metrics.items() if m.get("n")}
        latest = labeled[max(labeled)] if labeled else None
        return dg.Output(
            out,
            metadata={
                "labeled_predictions": int(sum(m.get("n") or 0 for m in metrics.values())),
                "partitions_with_labels": len(labeled),
                "latest_roc_auc": dg.MetadataValue.float(float(latest["roc_auc"]))
                if latest and latest.get("roc_auc") is not None
                else dg.MetadataValue.text("no labeled predictions with both classes"),
            },
        )

    return [model_performance]
