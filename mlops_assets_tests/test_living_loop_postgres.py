"""The living loop with new rows appended to a PostgreSQL table (the source a watermark query watches), under the
real Dagster daemon: see test_living_loop.py, whose helpers this uses. A module of its own so that a parallel run
(pytest-xdist, one module per worker) runs the two loops side by side."""

from __future__ import annotations

import pandas as pd
import pytest

from mlops_assets_tests.test_living_loop import DRIFT, FIRST, live_loop, loop_config, month_rows, next_month
from mlops_assets_tests.test_production_stack import production_fixture  # noqa: F401 - the `production` fixture


@pytest.mark.postgres
@pytest.mark.integration
@pytest.mark.slow
def test_rows_appended_to_a_postgresql_table_flow_to_a_fresh_champion(
    tmp_path, rainfall, production, pg_database
):
    import sqlalchemy as sa

    engine = sa.create_engine(pg_database, poolclass=sa.pool.NullPool)

    def append(first: str, last: str) -> None:
        # A real table's timestamp column (not text); rows land in one transaction, as a loader commits them.
        rows = month_rows(rainfall, first, last)
        rows = rows.assign(date=pd.to_datetime(rows["date"]))
        with engine.begin() as conn:
            rows.to_sql("weather", conn, index=False, if_exists="append")

    # The table holds everything up to the month before the drift; the quiet months arriving one at a time are
    # test_living_loop.py's part: here rows arrive from the drift on, until it retrains.
    initial_end = (pd.Period(DRIFT, "M") - 1).strftime("%Y-%m")
    append(FIRST, initial_end)
    config = loop_config(tmp_path, {"source": pg_database, "query": "SELECT * FROM weather"})
    arriving = [DRIFT, next_month(DRIFT)]
    live_loop(
        tmp_path, production, config, lambda m: append(m, m), arriving, rainfall, initial_end=initial_end
    )
