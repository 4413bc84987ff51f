"""The declared schema: the UCI one built in, the same from YAML/JSON, and a clear error for every malformed one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedkit.data import preprocess, uci
from fedkit.data.schema import UCI_HEART_DISEASE, Categorical, Label, Numeric, Schema, load_schema, uci_not_measured
from fedkit.errors import ConfigError, SchemaError

UCI_YAML = """\
# The UCI Heart Disease schema as a user would write it (FLamby's 13 features).
name: uci-heart-disease
columns: [age, sex, cp, trestbps, chol, fbs, restecg, thalach, exang, oldpeak, slope, ca, thal, num]
features:
  age: numeric
  sex: numeric
  cp: {categorical: [1, 2, 3, 4]}
  trestbps: numeric
  chol: numeric
  fbs: numeric
  restecg: {categorical: [0, 1, 2]}
  thalach: numeric
  exang: numeric
  oldpeak: numeric
label: {column: num, positive_above: 0}
drop: [slope, ca, thal]
missing: ["?"]
"""


def test_uci_schema_encodes_flambys_13_features_in_fedkits_order() -> None:
    assert UCI_HEART_DISEASE.feature_names == preprocess.FEATURES
    assert len(UCI_HEART_DISEASE.feature_names) == 13
    assert set(UCI_HEART_DISEASE.columns) == set(uci.COLUMNS)
    assert UCI_HEART_DISEASE.required == ("age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach",
                                          "exang", "oldpeak", "num")  # fmt: skip


def test_a_yaml_schema_saying_the_same_equals_the_built_in_one(tmp_path: Path) -> None:
    path = tmp_path / "schema.yaml"
    path.write_text(UCI_YAML)
    schema = load_schema(path)
    assert schema == UCI_HEART_DISEASE
    assert schema.fingerprint() == UCI_HEART_DISEASE.fingerprint()
    as_json = tmp_path / "schema.json"
    as_json.write_text(json.dumps(UCI_HEART_DISEASE.to_dict()))
    assert load_schema(as_json) == UCI_HEART_DISEASE


def test_fingerprint_follows_the_encoding_not_the_file_layout() -> None:
    layout = {"name": "mine", "missing": ["?", "NA", ""], "columns": None, "drop": []}
    relaid = Schema.from_dict({**UCI_HEART_DISEASE.to_dict(), **layout})
    assert relaid.fingerprint() == UCI_HEART_DISEASE.fingerprint()
    spec = UCI_HEART_DISEASE.to_dict()
    spec["features"] = dict(reversed(list(spec["features"].items())))
    reordered = Schema.from_dict(spec)
    assert reordered.feature_names != UCI_HEART_DISEASE.feature_names
    assert reordered.fingerprint() != UCI_HEART_DISEASE.fingerprint()
    spec = UCI_HEART_DISEASE.to_dict()
    spec["features"]["cp"] = {"categorical": [4, 3, 2, 1]}
    assert Schema.from_dict(spec).fingerprint() != UCI_HEART_DISEASE.fingerprint()
    relabelled = Schema.from_dict({**UCI_HEART_DISEASE.to_dict(), "label": {"column": "num", "positive_above": 1}})
    assert relabelled.fingerprint() != UCI_HEART_DISEASE.fingerprint()


def _random_schema(rng: np.random.Generator) -> Schema:
    features: list[Numeric | Categorical] = []
    for i in range(int(rng.integers(1, 6))):
        if rng.random() < 0.5:
            features.append(Numeric(f"f{i}"))
        elif rng.random() < 0.5:
            levels = sorted(rng.choice(20, size=int(rng.integers(2, 5)), replace=False) - 5)
            features.append(Categorical(f"f{i}", tuple(float(v) for v in levels)))
        else:
            features.append(Categorical(f"f{i}", tuple(f"L{j}" for j in range(int(rng.integers(2, 5))))))
    label = (
        Label("y", positive_above=float(rng.integers(0, 3)))
        if rng.random() < 0.5
        else Label("y", positive=("yes",), negative=("no", "0"))
    )
    drop = ("junk",) if rng.random() < 0.5 else ()
    names = [f.name for f in features] + ["y", *drop]
    return Schema(tuple(features), label, columns=tuple(rng.permutation(names)), drop=drop, name="random")


def test_to_dict_from_dict_round_trips_random_schemas() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        schema = _random_schema(rng)
        again = Schema.from_dict(json.loads(json.dumps(schema.to_dict())))
        assert again == schema and again.fingerprint() == schema.fingerprint()


def test_categorical_dummies_drop_the_first_level_and_name_numbers_plainly() -> None:
    assert Categorical("cp", (1, 2.0, 3)).dummies == ("cp_2", "cp_3")
    assert Categorical("smoker", ("never", "former", "current")).dummies == ("smoker_former", "smoker_current")
    schema = Schema((Categorical("c", ("a", "b", "c")), Numeric("n")), Label("y", positive_above=0))
    assert schema.feature_names == ("n", "c_b", "c_c")
    x = schema.encode({"n": np.array([1.5, 2.0, 3.0]), "c": np.array([0.0, 2.0, np.nan])})
    expected = np.array([[1.5, 0, 0], [2.0, 0, 1], [3.0, np.nan, np.nan]])
    assert np.array_equal(x, expected, equal_nan=True)


def test_uci_not_measured_is_chol_zero_in_switzerland_and_va_under_impute_only() -> None:
    assert uci_not_measured("va", "impute") == uci_not_measured("switzerland", "impute") == {"chol": (0.0,)}
    assert uci_not_measured("cleveland", "impute") == uci_not_measured("va", "drop") == {}


def _spec(**changes: object) -> dict[str, object]:
    spec = UCI_HEART_DISEASE.to_dict()
    spec.update(changes)
    return spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (_spec(feautres={}), r"unknown key 'feautres' \(did you mean 'features'\?\)"),
        ({"features": {"a": "numeric"}}, r"has no 'label'"),
        (_spec(features=["age", "sex"]), r"features must be a mapping"),
        (_spec(features={"age": "numerc"}), r"features\.age: 'numerc' is not a feature type; write 'numeric'"),
        (_spec(features={"cp": {"categorical": [1]}}), r"'cp' has 1 level\(s\); it needs at least 2"),
        (_spec(features={"cp": {"categorical": [1, 2, 2]}}), r"'cp': level\(s\) 2 listed more than once"),
        (_spec(features={"s": {"categorical": [True, False]}}), r"'s': a level is a boolean.*quote them"),
        (_spec(features={"s": {"categorical": [1, "a"]}}), r"'s': levels must be all numbers or all non-empty"),
        (_spec(features={}), r"has no features"),
        (_spec(features={"age": "numeric"}, drop=["age"]), r"column 'age' is declared twice \(feature and dropped\)"),
        (_spec(features={"num": "numeric"}), r"column 'num' is declared twice \(feature and the label\)"),
        (_spec(columns=["age", "num"]), r"columns .* lacks sex, cp"),
        (_spec(columns=[*uci.COLUMNS, "extra"]), r"column\(s\) extra in columns are neither a feature"),
        (_spec(label={"column": "num"}), r"give either positive_above .* or both positive and negative"),
        (_spec(label={"column": "num", "positive_above": 0, "positive": [1]}), r"give either positive_above"),
        (_spec(label={"column": "num", "positive": ["yes"]}), r"both positive and negative"),
        (_spec(label={"column": "num", "positive": [1], "negative": [1, 0]}), r"value\(s\) 1 are both positive"),
        (_spec(label={"column": "num", "positive": [True], "negative": [False]}), r"is a boolean"),
        (_spec(label={"column": "num", "positiv_above": 0}), r"label: unknown key 'positiv_above'"),
        (_spec(label={"positive_above": 0}), r"label has no 'column'"),
        (_spec(missing=[]), r"missing must list at least one token"),
        (_spec(missing=["?", "?"]), r"missing lists a token twice"),
        (
            _spec(features={"s": {"categorical": ["a", "?"]}}, columns=None),
            r"'\?' is both a level of 's' and a missing",
        ),
        (
            _spec(features={"c": {"categorical": [0, 1]}, "c_1": "numeric"}, columns=None),
            r"encoded feature name\(s\) c_1",
        ),
        (_spec(features={1: "numeric"}), r"features\.1: a column name must be a string; quote 1"),
        (_spec(name=""), r"name must be a non-empty string"),
    ],
)
def test_a_malformed_schema_is_refused_naming_the_field(spec: dict[str, object], message: str) -> None:
    with pytest.raises(SchemaError, match=message) as err:
        Schema.from_dict(spec, where="my.yaml")
    assert str(err.value).startswith("my.yaml: ")
    assert isinstance(err.value, ConfigError)


def test_schema_files_that_do_not_parse_or_exist_are_named(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=r"Schema file .*nope\.yaml does not exist"):
        load_schema(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("features: [a\n")
    with pytest.raises(SchemaError, match=rf"Schema file {bad} is not valid YAML"):
        load_schema(bad)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{features: 1}")
    with pytest.raises(SchemaError, match=r"bad\.json is not valid JSON"):
        load_schema(bad_json)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(SchemaError, match=r"list\.yaml: a schema is a mapping with features and label; got list"):
        load_schema(listed)


def test_yaml_yes_no_labels_must_be_quoted_and_work_when_they_are(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("features: {a: numeric}\nlabel: {column: sick, positive: [yes], negative: [no]}\n")
    with pytest.raises(SchemaError, match=r"boolean.*quote them \('yes'\)"):
        load_schema(path)
    path.write_text("features: {a: numeric}\nlabel: {column: sick, positive: ['yes'], negative: ['no']}\n")
    assert load_schema(path).label == Label("sick", positive=("yes",), negative=("no",))


def test_feature_lookup_suggests_the_closest_name() -> None:
    with pytest.raises(SchemaError, match=r"no feature 'chl' \(did you mean 'chol'\?\)"):
        UCI_HEART_DISEASE.feature("chl")
