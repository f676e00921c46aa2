"""Deployment operations as Dagster jobs, so they can be launched (and audited) from the UI."""

import dagster as dg

from mlops_assets.config import MlopsConfig
from mlops_assets.defs.champion import champion_materialization
from mlops_assets.defs.resources import MlopsProject


class RollbackConfig(dg.Config):
    """``to``: the registered version to make champion; empty means the previous champion. ``by``: who launches
    it (recorded; default: this run). ``override_reason``: force a version the gates do not clear, recorded and
    alerted (needs ``by``)."""

    to: str | None = None
    by: str | None = None
    override_reason: str | None = None


def build_deployment_jobs(cfg: MlopsConfig, prefix: list[str]) -> list[dg.JobDefinition]:
    @dg.op(name=f"{prefix[-1]}_rollback", pool="mlops_promotion")
    def rollback(context: dg.OpExecutionContext, config: RollbackConfig, project: MlopsProject) -> dict:
        """Move the champion back to the previous (or given) version through the registry's guard, recorded with
        reason ``rollback``."""
        from mlops_assets.registry.errors import GateRefusedError
        from mlops_assets.registry.guard import Override

        if config.override_reason and not config.by:
            raise dg.Failure("an override names the person who gives it: set `by` with `override_reason`")
        by = config.by or f"dagster rollback job (run {context.run_id})"
        override = Override(by, config.override_reason) if config.override_reason else None
        try:
            deployment = project.registry().rollback(
                to=config.to, run_id=context.run_id, by=by, override=override
            )
        except GateRefusedError as err:
            raise dg.Failure(str(err)) from None
        # deployed_model is the champion alias: record its move so the asset shows the new champion.
        context.log_event(champion_materialization(deployment, recorded_by=context.job_name))
        context.add_output_metadata(
            {"champion_version": deployment.version, "previous": str(deployment.previous_version)}
        )
        return deployment.to_dict()

    @dg.job(
        name=f"{prefix[-1]}_rollback_job", description="The champion back to the previous (or given) version."
    )
    def rollback_job():
        rollback()

    return [rollback_job]
