"""`mlops-assets run` against a plain pandas + Pandera + scikit-learn script doing the same reading, validation,
window features and training with no orchestration, measured in one run, on the bundled data and on a synthetic
dataset of the same schema (default 1M rows over the same 597 monthly partitions).

    .venv/bin/python benchmarks/bench_run.py [--rows 1000000] [--skip-large]

Prints wall time and peak memory of each, the ratio, and the fixed costs (interpreter + imports + definitions) of
`mlops-assets run` measured on their own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
CLI = [PY, "-m", "mlops_assets.cli"]

PLAIN = textwrap.dedent(
    '''
    """The same work without orchestration: read, validate (Pandera, lazy), window features, train, evaluate."""
    import sys, time
    import numpy as np, pandas as pd, pandera.pandas as pa
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    src, derive = sys.argv[1], sys.argv[2] == "derive"
    t0 = time.perf_counter()
    df = pd.read_csv(src) if src.endswith(".csv") else pd.read_parquet(src)
    if derive:
        df = df.drop(columns=df.columns[0])
        df.insert(0, "date", pd.Timestamp("1949-01-01", tz="UTC") + pd.to_timedelta(np.arange(len(df)), "D"))
    df = df.sort_values("date").reset_index(drop=True)
    feats = [c for c in df.columns if c not in ("date", "rain")]
    ref = df[df["date"] < df["date"].min() + pd.Timedelta(days=365)]
    cols = {"date": pa.Column("datetime64[ns, UTC]"), "rain": pa.Column(checks=pa.Check.isin([0, 1]), nullable=True)}
    for c in feats:
        lo, hi = ref[c].quantile(0.001), ref[c].quantile(0.999)
        w = hi - lo
        cols[c] = pa.Column("float64", coerce=True, nullable=True, checks=pa.Check.in_range(lo - 3 * w, hi + 3 * w))
    schema = pa.DataFrameSchema(cols, strict=True)
    try:
        schema.validate(df, lazy=True)
        bad = pd.Index([])
    except pa.errors.SchemaErrors as err:
        bad = pd.Index(pd.to_numeric(err.failure_cases["index"], errors="coerce").dropna().astype(int).unique())
    df = df.drop(index=bad)
    # past-window features, strictly before each row (time-based windows on the whole stream)
    s = df.set_index("date")
    out = {}
    out["rain_last_1D"] = s["rain"].shift(1)
    for w in ("3D", "7D", "30D"):
        out[f"rain_mean_{w}"] = s["rain"].rolling(w, closed="left").mean()
    for c in feats:
        out[f"{c}_last_1D"] = s[c].shift(1)
    X = pd.concat([s[feats], pd.DataFrame(out, index=s.index)], axis=1).reset_index(drop=True)
    y = s["rain"].to_numpy()
    n = len(X); cut = int(n * 0.8); hold = int(n * 0.9)
    model = HistGradientBoostingClassifier(random_state=0, early_stopping=False).fit(X.iloc[:cut], y[:cut])
    auc = roc_auc_score(y[hold:], model.predict_proba(X.iloc[hold:])[:, 1])
    print(f"plain: rows={n} quarantined={len(bad)} holdout_auc={auc:.3f} seconds={time.perf_counter() - t0:.2f}")
    '''
)


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall seconds and peak RSS (MiB) of one child process (GNU time's maximum resident set size)."""
    stats = cwd / "time.txt"
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "%M", "-o", str(stats), *cmd],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    peak_kib = int(stats.read_text().strip().splitlines()[-1])
    return wall, peak_kib / 1024, proc


def synthetic(path: Path, rows: int, rainfall: pd.DataFrame) -> None:
    """Rows with the bundled schema over the same date range: weather values resampled from the real data with
    noise, rain from a logistic model of them, timestamps spread within each day."""
    rng = np.random.default_rng(0)
    feats = [c for c in rainfall.columns if c not in ("date", "rain")]
    base = rainfall[feats].to_numpy()
    idx = rng.integers(0, len(base), rows)
    values = base[idx] + rng.normal(0, 0.1, (rows, len(feats)))
    days = np.sort(rng.integers(0, len(rainfall), rows))
    ts = (
        pd.Timestamp("1949-01-01", tz="UTC")
        + pd.to_timedelta(days, "D")
        + pd.to_timedelta(rng.integers(0, 86400, rows), "s")
    )
    logit = 0.9 * values[:, feats.index("dew point")] - 0.8 * values[:, feats.index("visibility")] - 0.5
    frame = pd.DataFrame(values, columns=feats)
    frame.insert(0, "date", ts.sort_values())
    frame["rain"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    frame.to_parquet(path, index=False)


def run_case(name: str, config: Path | None, plain_args: list[str], work: Path) -> dict:
    env = dict(
        os.environ,
        MLOPS_HOME=str(work / f"home_{name}"),
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
    )
    env.pop("DAGSTER_HOME", None)
    args = [*CLI, "run", "--no-progress", "--report", str(work / f"{name}.json")]
    if config:
        args += ["--config", str(config)]
    ours, ours_mem, _ = timed(args, env, work)
    report = json.loads((work / f"{name}.json").read_text())
    script = work / "plain.py"
    script.write_text(PLAIN)
    plain, plain_mem, proc = timed([PY, str(script), *plain_args], env, work)
    return {
        "case": name,
        "status": report["status"],
        "partitions": report["partitions"],
        "mlops_assets_s": round(ours, 2),
        "mlops_assets_peak_mib": round(ours_mem),
        "plain_s": round(plain, 2),
        "plain_peak_mib": round(plain_mem),
        "ratio": round(ours / plain, 2),
        "roc_auc": report["champion"]["metrics"].get("roc_auc") if report["champion"] else None,
        "plain_out": proc.stdout.strip(),
    }


def fixed_costs(work: Path) -> dict:
    env = dict(os.environ, MLOPS_HOME=str(work / "home_fixed"))
    code = (
        "import time; t=time.perf_counter(); import dagster, mlflow, sklearn.ensemble, pandera.pandas; "
        "t1=time.perf_counter(); from mlops_assets.definitions import defs; defs.resolve_asset_graph(); "
        "t2=time.perf_counter(); print(f'{t1-t:.2f} {t2-t1:.2f}')"
    )
    t0 = time.perf_counter()
    out = subprocess.run([PY, "-c", code], env=env, cwd=work, capture_output=True, text=True, check=True)
    total = time.perf_counter() - t0
    imports, defs = map(float, out.stdout.split())
    return {"interpreter_imports_definitions_s": round(total, 2), "imports_s": imports, "definitions_s": defs}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-large", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from mlops_assets.config import load_config
    from mlops_assets.data.sources import read_source, resolve_files

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print("fixed costs:", fixed_costs(work))
        bundled = resolve_files(load_config())[0]
        results = [run_case("bundled", None, [str(bundled), "derive"], work)]
        if not args.skip_large:
            data = work / "synthetic.parquet"
            synthetic(data, args.rows, read_source(load_config()))
            cfg = work / "synthetic.yaml"
            cfg.write_text(
                "dataset: {source: synthetic.parquet, timestamp_column: date, label_column: rain}\n"
                "model: {name: synthetic}\n"
            )
            results.append(run_case(f"synthetic_{args.rows}", cfg, [str(data), "plain"], work))
        for r in results:
            print(json.dumps(r))
        print(
            f"{'case':<22}{'mlops-assets run':>18}{'plain script':>14}{'ratio':>8}{'peak MiB (ours/plain)':>24}"
        )
        for r in results:
            print(
                f"{r['case']:<22}{r['mlops_assets_s']:>16.1f} s{r['plain_s']:>12.1f} s{r['ratio']:>8.2f}"
                f"{r['mlops_assets_peak_mib']:>14}/{r['plain_peak_mib']}"
            )


if __name__ == "__main__":
    main()
