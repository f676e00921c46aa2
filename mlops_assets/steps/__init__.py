"""The use-cases of the pipeline, as plain functions over typed inputs that return a dataclass outcome.

Ingest (:mod:`.ingest`), publish validated data (:mod:`.ingest`), build features (:mod:`.features`), train and
gate (:mod:`.train`), promote (:mod:`.promote`) and assess drift (:mod:`.drift`). The Dagster assets and checks in
:mod:`mlops_assets.defs` call them and translate the outcome into materializations and check results; the replay
and the CLI call the same functions. Nothing here imports Dagster: a step is tested on small real data without
running the graph.
"""
