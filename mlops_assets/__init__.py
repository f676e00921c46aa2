"""mlops_assets: CI/CD for ML models as Dagster software-defined assets."""
