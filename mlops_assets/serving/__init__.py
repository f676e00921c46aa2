"""The prediction service: a Starlette app on uvicorn serving the registry's champion (no Dagster here).

- :mod:`.validation`: request bodies to validated columns, errors naming the field;
- :mod:`.features`: window features completed through the feature store's code from the online store;
- :mod:`.batcher`: concurrent requests coalesced into one model call;
- :mod:`.model`: the served model and the champion watcher (verified hot swap);
- :mod:`.probation`: a new champion watched (p95 latency, 5xx) and rolled back through the registry's guard;
- :mod:`.prediction_log`: every prediction, written in batches off the request path (spilled to local files and
  replayed while its database is away), and feedback labels (written once);
- :mod:`.auth`: scoped bearer tokens;
- :mod:`.metrics`: Prometheus text;
- :mod:`.service` and :mod:`.app`: the service and its ASGI app; :mod:`.server`: the protocol behind ``mlops-assets serve`` (one write per response, header timeout).
"""
