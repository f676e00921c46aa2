"""The Dagster entry point: ``dagster dev -m mlops_assets.definitions``.

One model's graph (raw_data -> validated_data -> features -> trained_model -> deployed_model), built from
``mlops.yaml`` ($MLOPS_CONFIG, else the bundled default).
"""

from mlops_assets.config import config_path, load_config
from mlops_assets.defs.factory import build_model_defs

defs = build_model_defs(load_config(), config_path=str(config_path()))
