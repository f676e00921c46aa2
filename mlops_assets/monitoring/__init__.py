"""Monitoring: reference profiles, drift statistics, model performance and the retraining policy.

Plain modules (no Dagster), imported by their own names so that importing :mod:`mlops_assets.config` (which needs
only :mod:`.settings`) stays light:

* :mod:`.profile` -- :func:`~.profile.build_profile`, :class:`~.profile.Profile` (stored with each model version)
* :mod:`.drift` -- :func:`~.drift.detect_drift`, :class:`~.drift.DriftReport`, :func:`~.drift.drift_plot`
* :mod:`.performance` -- :func:`~.performance.champion_metric` on newly labeled data
* :mod:`.policy` -- :func:`~.policy.decide_retrain`, :class:`~.policy.PolicyState`, :class:`~.policy.Decision`
* :mod:`.settings` -- the ``drift:`` and ``retraining:`` sections of ``mlops.yaml``
"""
