"""The prediction service: a Starlette app on uvicorn serving the registry's champion (no Dagster here).

- :mod:`.validation`: request bodies to validated columns, errors naming the field;
- :mod:`.features`: window features completed through the feature store's code from the online store;
- :mod:`.batcher`: concurrent requests coalesced into one model call;
- :mod:`.model`: the served model and the champion watcher (verified hot swap);
- :mod:`.prediction_log`: every prediction, written in batches off the request path, and feedback labels;
- :mod:`.metrics`: Prometheus text;
- :mod:`.service` and :mod:`.app`: the service and its ASGI app; :mod:`.server`: ``mlops-assets serve``.
"""
