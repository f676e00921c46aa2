import pytest

from mlops_assets.config import BUNDLED_CONFIG, ConfigError, load_config, parse_config

BASE = {"dataset": {"source": "x.csv", "timestamp_column": "t", "label_column": "y"}}


def test_bundled_config_describes_the_rainfall_data():
    cfg = load_config()
    assert cfg.dataset.timestamp_column == "date"
    assert cfg.dataset.label_column == "rain"
    assert cfg.dataset.positive_label == 1
    assert cfg.partitions.freq == "month"
    assert cfg.model.name == "mlops_model"
    assert str(cfg.dataset.timestamp_from_row_order.start) == "1949-01-01"


def test_config_file_from_environment(tmp_path, monkeypatch):
    p = tmp_path / "m.yaml"
    p.write_text("dataset: {source: a.csv, timestamp_column: t, label_column: y}\nmodel: {name: other}\n")
    monkeypatch.setenv("MLOPS_CONFIG", str(p))
    cfg = load_config()
    assert cfg.model.name == "other"
    assert cfg.resolve_source() == str(tmp_path / "a.csv")
    assert load_config(BUNDLED_CONFIG).model.name == "mlops_model"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**BASE, "datasets": {}}, "unknown key 'datasets'"),
        ({"dataset": {**BASE["dataset"], "lable": "y"}}, "unknown key 'dataset.lable'"),
        (
            {"dataset": {"source": "x.csv", "timestamp_column": "t"}},
            "missing required key 'dataset.label_column'",
        ),
        ({**BASE, "partitions": {"freq": "fortnight"}}, "'partitions.freq'"),
        ({**BASE, "model": {"holdout_partitions": "lots"}}, "'model.holdout_partitions'"),
        ({**BASE, "model": {"name": "has space"}}, "'model.name'"),
        ({**BASE, "validation": {"max_null_fraction": 2}}, "'validation.max_null_fraction'"),
        ({"dataset": {**BASE["dataset"], "query": "select 1"}}, "dataset.query"),
        ({"dataset": {**BASE["dataset"], "positive_label": None}}, "'dataset.positive_label': Value error"),
        ({"dataset": {**BASE["dataset"], "positive_label": [1]}}, "'dataset.positive_label': Value error"),
        ({**BASE, "probation": {"duration_seconds": 0}}, "'probation.duration_seconds'"),
        ({**BASE, "probation": {"max_error_rate": 1.5}}, "'probation.max_error_rate'"),
        ({**BASE, "probation": {"max_p95_latency_ratio": 0.5}}, "'probation.max_p95_latency_ratio'"),
        ({**BASE, "probation": {"min_requests": "many"}}, "'probation.min_requests'"),
        ({**BASE, "probation": {"p95_ms": 10}}, "unknown key 'probation.p95_ms'"),
    ],
)
def test_bad_config_names_the_key(data, message):
    with pytest.raises(ConfigError) as err:
        parse_config(data, origin="m.yaml")
    assert message in str(err.value)
    assert str(err.value).startswith("m.yaml:")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize("label", [1, 0, 1.5, True, "yes", "1"])
def test_positive_label_keeps_its_yaml_type(label):
    # Labels are compared with the stored values: 1, True and "1" are different labels.
    cfg = parse_config({"dataset": {**BASE["dataset"], "positive_label": label}})
    assert cfg.dataset.positive_label == label
    assert type(cfg.dataset.positive_label) is type(label)


@pytest.mark.parametrize(
    "text", ["1D", "7D", "12h", "90min", "45s", "365D", " 3D ", "1d", "2 days", "1W", "36h"]
)
def test_config_durations_checked_without_pandas_agree_with_pandas(text):
    """The plain spellings skip pandas (every command validates the config); the rest still go through it."""
    from mlops_assets.features.settings import _duration_for_check, parse_duration

    assert _duration_for_check(text, key="window") == parse_duration(text, key="window")


@pytest.mark.parametrize("text", ["0D", "0min", "-1D", "1M", "month"])
def test_config_durations_refused_alike(text):
    from mlops_assets.features.settings import _duration_for_check, parse_duration

    with pytest.raises(ValueError) as plain:
        _duration_for_check(text, key="window")
    with pytest.raises(ValueError) as via_pandas:
        parse_duration(text, key="window")
    assert str(plain.value) == str(via_pandas.value)


@pytest.mark.parametrize(
    ("freq", "windows"),
    [("day", (91, 91, 1095)), ("week", (13, 13, 156)), ("month", (3, 3, 36)), ("year", (1, 1, 10))],
)
def test_windows_default_to_the_partition_frequency(freq, windows):
    m = parse_config({**BASE, "partitions": {"freq": freq}}).model
    assert (m.holdout_partitions, m.validation_partitions, m.train_window_partitions) == windows
    assert m.refit is True
    assert (m.threshold.objective, m.threshold.target) == ("f1", None)


def test_explicit_windows_win_and_null_training_window_means_all_history():
    m = parse_config(
        {
            **BASE,
            "partitions": {"freq": "week"},
            "model": {"holdout_partitions": 4, "train_window_partitions": None},
        }
    ).model
    assert (m.holdout_partitions, m.validation_partitions, m.train_window_partitions) == (4, 13, None)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("holdout_fraction", "model.holdout_partitions"),
        ("validation_fraction", "model.validation_partitions"),
    ],
)
def test_fraction_keys_are_refused_naming_their_replacement(old, new):
    with pytest.raises(ConfigError, match=f"'model.{old}' was replaced by '{new}'"):
        parse_config({**BASE, "model": {old: 0.1}}, origin="m.yaml")


def test_threshold_objective_and_target_must_match():
    cfg = parse_config({**BASE, "model": {"threshold": {"objective": "precision", "target": 0.9}}})
    assert (cfg.model.threshold.objective, cfg.model.threshold.target) == ("precision", 0.9)
    with pytest.raises(ConfigError, match="needs a target"):
        parse_config({**BASE, "model": {"threshold": {"objective": "recall"}}})
    with pytest.raises(ConfigError, match="not f1"):
        parse_config({**BASE, "model": {"threshold": {"target": 0.9}}})


def test_the_readme_rollout_block_is_the_shadow_defaults():
    """The README's `rollout:` example says "the defaults": it parses, and every value it shows is the default."""
    import re
    from pathlib import Path

    import yaml

    from mlops_assets.config import RolloutConfig, ShadowConfig

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    [block] = re.findall(r"```yaml\n(rollout:\n.*?)```", readme, flags=re.S)
    shown = RolloutConfig.model_validate(yaml.safe_load(block)["rollout"])
    assert shown.mode == "shadow"
    assert shown.shadow == ShadowConfig()
    assert set(yaml.safe_load(block)["rollout"]["shadow"]) == set(ShadowConfig.model_fields)


def test_rollout_mistakes_name_the_key():
    data = {"dataset": {"source": "x.csv", "timestamp_column": "ts", "label_column": "y"}}
    with pytest.raises(ConfigError, match="rollout.mode"):
        parse_config({**data, "rollout": {"mode": "canary"}})
    with pytest.raises(ConfigError, match=r"min_requests \(500\) is above rollout.shadow.requests \(100\)"):
        parse_config(
            {**data, "rollout": {"mode": "shadow", "shadow": {"requests": 100, "min_requests": 500}}}
        )
    with pytest.raises(ConfigError, match="rollout.shadow.sample"):
        parse_config({**data, "rollout": {"shadow": {"sample": 0}}})
