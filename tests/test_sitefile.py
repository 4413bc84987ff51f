"""A site's own file read against the schema: today's arrays for the UCI files, either format, every refusal located."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedkit.data import preprocess, uci
from fedkit.data.schema import UCI_HEART_DISEASE, Categorical, Label, Numeric, Schema, uci_not_measured
from fedkit.data.sitefile import SiteData, read_site_bytes, read_site_file, read_site_frame
from fedkit.errors import ConfigError, ConfigTypeError, DataError, SiteDataError

HEADER = ",".join(uci.COLUMNS)
GOOD_ROWS = [
    "63.0,1.0,1.0,145.0,233.0,1.0,2.0,150.0,0.0,2.3,3.0,0.0,6.0,0",
    "67.0,1.0,4.0,160.0,286.0,0.0,2.0,108.0,1.0,1.5,2.0,3.0,3.0,2",
    "37,1,3,130,250,0,0,187,0,3.5,?,?,?,0",
    "41,0,2,130,204,0,2,172,0,1.4,1,0,3,1",
]


def _write(tmp_path: Path, lines: list[str], name: str = "site.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _refusal(path: Path, **kwargs: object) -> SiteDataError:
    with pytest.raises(SiteDataError) as err:
        read_site_file(path, kwargs.pop("schema", UCI_HEART_DISEASE), missing=kwargs.pop("missing", "drop"), **kwargs)
    assert str(path) in str(err.value)
    assert err.value.source == str(path)
    return err.value


@pytest.mark.parametrize("hospital", uci.HOSPITALS)
@pytest.mark.parametrize("missing", ["drop", "impute"])
def test_uci_files_give_todays_arrays(data_dir: Path, hospital: str, missing: str) -> None:
    path = data_dir / uci.file_name(hospital)
    x, y = preprocess.encode(preprocess.select(uci.read_hospital(data_dir, hospital), hospital, missing))
    site = read_site_file(path, UCI_HEART_DISEASE, missing=missing, not_measured=uci_not_measured(hospital, missing))
    assert np.array_equal(site.x, x, equal_nan=True) and site.x.dtype == x.dtype
    assert np.array_equal(site.y, y) and site.y.dtype == y.dtype
    assert site.features == preprocess.FEATURES
    assert site.sha256 == uci.PINS[uci.file_name(hospital)].sha256
    assert site.rows == uci.PINS[uci.file_name(hospital)].rows and site.rows - site.dropped == len(y)
    assert site.notes == ()


def test_uci_flamby_row_counts_come_out_of_the_schema_reader(data_dir: Path) -> None:
    kept = {
        h: len(read_site_file(data_dir / uci.file_name(h), UCI_HEART_DISEASE, missing="drop").y) for h in uci.HOSPITALS
    }
    assert kept == {"cleveland": 303, "hungarian": 261, "switzerland": 46, "va": 130}  # DESIGN.md, FLamby


def test_the_bytes_parsed_are_the_bytes_hashed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, [HEADER, *GOOD_ROWS])
    first = path.read_bytes()
    calls = []

    def read_bytes(self: Path) -> bytes:  # the file changes after the first read
        calls.append(self)
        return first if len(calls) == 1 else first.replace(b"63.0", b"99.0")

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    site = read_site_file(path, UCI_HEART_DISEASE, missing="drop")
    assert len(calls) == 1
    assert site.sha256 == uci.sha256_bytes(first)
    assert site.x[0, 0] == 63.0


def _random_table(
    schema: Schema, rng: np.random.Generator, n: int
) -> tuple[dict[str, list[str]], np.ndarray, np.ndarray]:
    """Random cells (as text) of every schema column, and the expected x (impute) and y computed from the draws."""
    cells: dict[str, list[str]] = {}
    blocks: dict[str, np.ndarray] = {}
    missing = schema.missing[0]
    for f in schema.features:
        absent = rng.random(n) < 0.1
        if isinstance(f, Numeric):
            values = np.round(rng.normal(50, 30, n), int(rng.integers(0, 3)))
            formats = ["{:g}", "{:.3f}", "{:+.6e}", " {} "]
            cells[f.name] = [
                missing if a else formats[rng.integers(4)].format(v) for v, a in zip(values, absent, strict=True)
            ]
            blocks[f.name] = np.where(absent, np.nan, values)[:, None]
        else:
            index = rng.integers(0, len(f.levels), n)
            if f.numeric_levels:
                text = [rng.choice(["{:g}", "{:.1f}", "{:.4f}"]).format(f.levels[i]) for i in index]
            else:
                text = [str(f.levels[i]) for i in index]
            cells[f.name] = [missing if a else t for t, a in zip(text, absent, strict=True)]
            dummies = (index[:, None] == np.arange(1, len(f.levels))[None, :]).astype(np.float64)
            dummies[absent] = np.nan
            blocks[f.name] = dummies
    label = schema.label
    y = np.zeros(n)
    y[: n // 2] = 1
    rng.shuffle(y)
    if label.positive_above is not None:
        raw = np.where(
            y == 1, label.positive_above + rng.integers(1, 4, n), label.positive_above - rng.integers(0, 3, n)
        )
        cells[label.column] = [f"{v:g}" for v in raw]
    else:
        cells[label.column] = [str(rng.choice(label.positive if c else label.negative)) for c in y]
    for d in schema.drop:
        cells[d] = [rng.choice(["?", "1", "2.5"]) for _ in range(n)]
    order = [f.name for f in schema.numeric] + [f.name for f in schema.categorical]
    return cells, np.concatenate([blocks[name] for name in order], axis=1), y


def _headerless(schema: Schema, cells: dict[str, list[str]]) -> bytes:
    rows = zip(*(cells[c] for c in schema.columns or ()), strict=True)
    return ("\n".join(",".join(r) for r in rows) + "\n").encode()


def _csv(cells: dict[str, list[str]], rng: np.random.Generator, extra: int) -> bytes:
    columns = {
        **cells,
        **{f"extra{i}": [str(v) for v in rng.integers(0, 9, len(next(iter(cells.values()))))] for i in range(extra)},
    }
    names = list(rng.permutation(list(columns)))
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL if rng.random() < 0.5 else csv.QUOTE_MINIMAL, lineterminator="\r\n")
    writer.writerow(names)
    writer.writerows(zip(*(columns[c] for c in names), strict=True))
    return out.getvalue().encode()


def _schemas(rng: np.random.Generator) -> Schema:
    features: list[Numeric | Categorical] = []
    for i in range(int(rng.integers(1, 7))):
        kind = rng.integers(3)
        if kind == 0:
            features.append(Numeric(f"num{i}"))
        elif kind == 1:
            features.append(
                Categorical(
                    f"cat{i}", tuple(float(v) for v in sorted(rng.choice(10, int(rng.integers(2, 5)), replace=False)))
                )
            )
        else:
            features.append(Categorical(f"txt{i}", tuple(f"level {j}" for j in range(int(rng.integers(2, 5))))))
    label = (
        Label("target", positive_above=0)
        if rng.random() < 0.5
        else Label("target", positive=("sick",), negative=("well", "0"))
    )
    drop = ("unused",) if rng.random() < 0.5 else ()
    columns = tuple(rng.permutation([f.name for f in features] + ["target", *drop]))
    return Schema(tuple(features), label, columns=columns, drop=drop, missing=("?", "NA"), name="random")


def test_random_tables_read_the_same_from_uci_format_and_from_csv_with_shuffled_columns() -> None:
    rng = np.random.default_rng(12)
    for _ in range(60):
        schema = _schemas(rng)
        cells, x, y = _random_table(schema, rng, int(rng.integers(4, 120)))
        plain = read_site_bytes(_headerless(schema, cells), schema, source="plain", missing="impute")
        named = read_site_bytes(_csv(cells, rng, int(rng.integers(0, 3))), schema, source="named.csv", missing="impute")
        assert np.array_equal(plain.x, x, equal_nan=True) and np.array_equal(plain.y, y)
        assert np.array_equal(named.x, x, equal_nan=True) and np.array_equal(named.y, y)
        assert named.features == plain.features == schema.feature_names
        kept = ~np.isnan(x).any(axis=1)
        if 0 < y[kept].sum() < kept.sum():
            dropped = read_site_bytes(_csv(cells, rng, 0), schema, source="d.csv", missing="drop")
            assert np.array_equal(dropped.x, x[kept]) and np.array_equal(dropped.y, y[kept])
            assert dropped.dropped == int((~kept).sum())


def test_random_uci_tables_give_todays_arrays_under_both_policies() -> None:
    rng = np.random.default_rng(3)
    for trial in range(40):
        cells, _, _ = _random_table(UCI_HEART_DISEASE, rng, int(rng.integers(10, 80)))
        cells["chol"] = [c if rng.random() < 0.8 else "0" for c in cells["chol"]]
        data = _headerless(UCI_HEART_DISEASE, cells)
        hospital = uci.HOSPITALS[trial % 4]
        for missing in ("drop", "impute"):
            table = preprocess.select(uci.parse(data, "t"), hospital, missing)
            x, y = preprocess.encode(table)
            if not 0 < y.sum() < len(y):
                continue
            site = read_site_bytes(
                data, UCI_HEART_DISEASE, source="t", missing=missing, not_measured=uci_not_measured(hospital, missing)
            )
            assert np.array_equal(site.x, x, equal_nan=True) and np.array_equal(site.y, y)


def test_csv_with_named_columns_in_any_order_notes_what_it_ignores(tmp_path: Path) -> None:
    frame = pd.read_csv(io.StringIO("\n".join([HEADER, *GOOD_ROWS])))
    frame["patient_id"] = range(len(frame))
    shuffled = frame[["patient_id", *reversed(uci.COLUMNS)]]
    path = tmp_path / "own.csv"
    shuffled.to_csv(path, index=False)
    site = read_site_file(path, UCI_HEART_DISEASE, missing="impute")
    plain = read_site_bytes(("\n".join(GOOD_ROWS) + "\n").encode(), UCI_HEART_DISEASE, source="p", missing="impute")
    assert np.array_equal(site.x, plain.x, equal_nan=True) and np.array_equal(site.y, plain.y)
    assert site.notes == (f"{path}: ignored column(s) not in schema 'uci-heart-disease': patient_id.",)


def test_excel_style_files_read_bom_crlf_semicolons_and_blank_lines(tmp_path: Path) -> None:
    lines = [HEADER.replace(",", ";"), *(r.replace(",", ";") for r in GOOD_ROWS), ";;;;;;;;;;;;;", ""]
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode())
    site = read_site_file(path, UCI_HEART_DISEASE, missing="impute", delimiter=";")
    assert site.rows == 4 and site.y.tolist() == [0, 1, 0, 1]


def test_a_data_frame_reads_like_the_file_and_names_rows_by_position() -> None:
    frame = pd.read_csv(io.StringIO("\n".join([HEADER, *GOOD_ROWS])), na_values="?", index_col=None)
    frame.index = [f"p{i}" for i in range(len(frame))]
    site = read_site_frame(frame, UCI_HEART_DISEASE, missing="impute", source="cleveland frame")
    plain = read_site_bytes(("\n".join(GOOD_ROWS) + "\n").encode(), UCI_HEART_DISEASE, source="p", missing="impute")
    assert np.array_equal(site.x, plain.x, equal_nan=True) and site.sha256 is None
    frame.loc["p2", "cp"] = 9
    with pytest.raises(
        SiteDataError, match=r"^cleveland frame, row 3 \(index 'p2'\), column 'cp': 9\.0 is not a level"
    ) as err:
        read_site_frame(frame, UCI_HEART_DISEASE, missing="impute", source="cleveland frame")
    assert (err.value.line, err.value.column) == (3, "cp")


# Every refusal names the file, the line and the column.


def test_missing_column_is_named_with_a_suggestion(tmp_path: Path) -> None:
    path = _write(tmp_path, [HEADER.replace("chol", "Chol"), *GOOD_ROWS])
    err = _refusal(path)
    assert (err.line, err.column) == (1, "chol")
    assert f"{path}, line 1 (header): no column 'chol' (is 'Chol' meant to be 'chol'? rename it)" in str(err)
    path = _write(tmp_path, [HEADER.replace(",num", "").replace(",fbs", ""), *(r[: r.rindex(",")] for r in GOOD_ROWS)])
    err = _refusal(path)
    assert err.column == "fbs" and "needs as a feature; also missing: 'num'." in str(err)


def test_unknown_categorical_level_names_line_column_and_levels(tmp_path: Path) -> None:
    rows = list(GOOD_ROWS)
    rows[2] = rows[2].replace("37,1,3,", "37,1,5,")
    err = _refusal(_write(tmp_path, rows))
    assert (err.line, err.column) == (3, "cp")
    assert "line 3, column 'cp': '5' is not a level of 'cp'; schema 'uci-heart-disease' allows 1, 2, 3, 4" in str(err)


def test_text_level_must_match_exactly(tmp_path: Path) -> None:
    schema = Schema((Categorical("smoker", ("never", "current")),), Label("sick", positive=("yes",), negative=("no",)))
    err = _refusal(_write(tmp_path, ["sick,smoker", "yes,never", "no,Never"]), schema=schema)
    assert (err.line, err.column) == (3, "smoker") and "'Never' is not a level of 'smoker'" in str(err)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", r"'abc' is not a number; only numbers and '\?' \(missing\) are allowed"),
        ("", r"an empty field is not a missing value in schema 'uci-heart-disease': write '\?' there"),
        ("nan", r"'nan' is not a finite number; mark a missing value with '\?'"),
        ("1_000", r"'1_000' is not a number"),
    ],
)
def test_non_numeric_values_are_refused_with_the_reason(tmp_path: Path, value: str, message: str) -> None:
    rows = [HEADER, *GOOD_ROWS]
    rows[4] = rows[4].replace(",130,", f",{value},")
    err = _refusal(_write(tmp_path, rows))
    assert (err.line, err.column) == (5, "trestbps")
    assert "line 5, column 'trestbps': " in str(err)
    assert re.search(message, str(err))


def test_decimal_comma_gets_a_hint(tmp_path: Path) -> None:
    rows = [HEADER.replace(",", ";"), *(r.replace(",", ";") for r in GOOD_ROWS)]
    rows[1] = rows[1].replace("2.3", "2,3")
    err = _refusal(_write(tmp_path, rows), delimiter=";")
    assert (err.line, err.column) == (2, "oldpeak") and "write the decimal point as '.' (2.3)" in str(err)


def test_empty_file_and_header_only_and_blank_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert "the file is empty (0 bytes)" in str(_refusal(empty))
    assert "has a header (line 1) but no data rows" in str(_refusal(_write(tmp_path, [HEADER])))
    assert "has no rows (only blank lines)" in str(_refusal(_write(tmp_path, ["", "  ", ""])))


def test_no_rows_of_one_class_names_the_class(tmp_path: Path) -> None:
    negatives = [r for r in GOOD_ROWS if r.endswith(",0")]
    err = _refusal(_write(tmp_path, negatives))
    assert err.column == "num" and "no rows of class 1 (num > 0) among its 2 rows" in str(err)
    rows = [*negatives, "50,1,4,?,200,0,1,120,1,1.0,?,?,?,3"]  # the only positive has a missing trestbps
    err = _refusal(_write(tmp_path, rows), missing="drop")
    assert "no rows of class 1 (num > 0) among its 2 rows left after dropping 1 with a missing value" in str(err)
    assert read_site_file(tmp_path / "site.csv", UCI_HEART_DISEASE, missing="impute").y.tolist() == [0, 0, 1]


def test_every_row_dropped_names_the_column_most_often_missing(tmp_path: Path) -> None:
    rows = [r.replace(",130,", ",?,").replace(",145.0,", ",?,").replace(",160.0,", ",?,") for r in GOOD_ROWS]
    err = _refusal(_write(tmp_path, rows))
    assert err.column == "trestbps" and "use missing='impute'" in str(err)


@pytest.mark.parametrize(("sep", "shown"), [(";", "';'"), ("\t", "a tab")])
def test_wrong_delimiter_is_guessed(tmp_path: Path, sep: str, shown: str) -> None:
    err = _refusal(_write(tmp_path, [r.replace(",", sep) for r in [HEADER, *GOOD_ROWS]]))
    assert err.line == 1 and f"the file seems separated by {shown}, not ','" in str(err)
    err = _refusal(_write(tmp_path, GOOD_ROWS), delimiter=";")
    assert "the file seems separated by ',', not ';'. Pass delimiter=','" in str(err)


def test_duplicated_header_column(tmp_path: Path) -> None:
    err = _refusal(_write(tmp_path, [HEADER + ",age", *(r + ",1" for r in GOOD_ROWS)]))
    assert (err.line, err.column) == (1, "age") and "column 'age' appears 2 times (fields 1, 15)" in str(err)


def test_repeated_header_and_wrong_field_counts_name_their_lines(tmp_path: Path) -> None:
    err = _refusal(_write(tmp_path, [HEADER, *GOOD_ROWS[:2], HEADER, *GOOD_ROWS[2:]]))
    assert err.line == 4 and "line 4: the header repeats here (files joined together?)" in str(err)
    err = _refusal(_write(tmp_path, [HEADER, GOOD_ROWS[0], GOOD_ROWS[1] + ",", GOOD_ROWS[2][:-2]]))
    assert (
        err.line == 3
        and "line 3: 15 fields where the header (line 1) has 14 columns; the line ends with ','" in str(err)
    )
    assert "line 4: 13 fields where the header (line 1) has 14 columns." in str(err)  # listed after the first
    err = _refusal(_write(tmp_path, [*GOOD_ROWS, "1,2,3"]))
    assert err.line == 5 and "3 fields where schema 'uci-heart-disease' has 14 columns" in str(err)


def test_missing_or_unknown_label_is_refused(tmp_path: Path) -> None:
    rows = list(GOOD_ROWS)
    rows[1] = rows[1][:-1] + "?"
    err = _refusal(_write(tmp_path, rows), missing="impute")
    assert (err.line, err.column) == (2, "num") and "the label is missing" in str(err)
    schema = Schema((Numeric("age"),), Label("sick", positive=("yes", 1), negative=("no", 0)))
    assert read_site_file(
        _write(tmp_path, ["age,sick", "1,yes", "2,0", "3,1.0"]), schema, missing="drop"
    ).y.tolist() == [1, 0, 1]
    err = _refusal(_write(tmp_path, ["age,sick", "1,yes", "2,maybe"]), schema=schema)
    assert (err.line, err.column) == (3, "sick")
    assert "'maybe' is neither a positive (sick in ('yes', '1')) nor a negative (sick in ('no', '0')) label" in str(err)


def test_several_problems_are_listed_after_the_first(tmp_path: Path) -> None:
    rows = [HEADER, *GOOD_ROWS]
    rows[2] = rows[2].replace("286.0", "x")
    rows[3] = rows[3].replace("37,1,3,", "37,1,7,")
    err = _refusal(_write(tmp_path, rows))
    assert (err.line, err.column) == (3, "chol")
    assert "More problems in" in str(err) and "line 4, column 'cp': '7' is not a level" in str(err)


def test_text_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(("\n".join([HEADER, *GOOD_ROWS[:2]]) + "\n").encode() + "caf\xe9\n".encode("latin-1"))
    err = _refusal(path)
    assert err.line == 4 and "is not UTF-8 text; save the file as UTF-8" in str(err)


def test_header_naming_no_schema_column_and_headerless_without_column_order(tmp_path: Path) -> None:
    err = _refusal(_write(tmp_path, ["patient,years", "1,2"]))
    assert err.line == 1 and "looks like a header ('patient', 'years') but names none of the columns" in str(err)
    schema = Schema((Numeric("a"),), Label("y", positive_above=0))
    err = _refusal(_write(tmp_path, ["1,0", "2,1"]), schema=schema)
    assert "no header line and schema 'custom' declares no column order (columns:)" in str(err)
    assert read_site_file(_write(tmp_path, ["y,a", "0,1", "1,2"]), schema, missing="drop").x.tolist() == [[1], [2]]


def test_unreadable_quotes_name_the_line(tmp_path: Path) -> None:
    err = _refusal(_write(tmp_path, [HEADER, GOOD_ROWS[0], '"63.0"x,' + GOOD_ROWS[1]]))
    assert err.line == 3 and "not readable as CSV" in str(err)


def test_not_measured_codes_become_missing_and_must_name_a_feature(tmp_path: Path) -> None:
    path = _write(tmp_path, [r.replace("233.0", "0") for r in GOOD_ROWS])
    site = read_site_file(path, UCI_HEART_DISEASE, missing="impute", not_measured={"chol": [0]})
    assert np.isnan(site.x[0, preprocess.FEATURES.index("chol")]) and not np.isnan(site.x[1:, 3]).any()
    assert read_site_file(path, UCI_HEART_DISEASE, missing="drop", not_measured={"chol": [0]}).dropped == 1
    with pytest.raises(ConfigError, match=r"no feature 'chl' \(did you mean 'chol'\?\)"):
        read_site_file(path, UCI_HEART_DISEASE, missing="impute", not_measured={"chl": [0]})
    with pytest.raises(ConfigError, match=r"'not_measured' codes of column 'chol' must be numbers"):
        read_site_file(path, UCI_HEART_DISEASE, missing="impute", not_measured={"chol": ["zero"]})


def test_bad_arguments_and_paths_are_named(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD_ROWS)
    with pytest.raises(ConfigError, match=r"The 'missing' parameter of read_site_file must be one of 'drop', 'impute'"):
        read_site_file(path, UCI_HEART_DISEASE, missing="dorp")
    with pytest.raises(ConfigError, match=r"The 'delimiter' parameter of read_site_file"):
        read_site_file(path, UCI_HEART_DISEASE, missing="drop", delimiter=":")
    with pytest.raises(DataError, match=r"nope\.csv: no such file"):
        read_site_file(tmp_path / "nope.csv", UCI_HEART_DISEASE, missing="drop")
    with pytest.raises(DataError, match=r"is not a file"):
        read_site_file(tmp_path, UCI_HEART_DISEASE, missing="drop")


def test_site_data_is_what_the_pipeline_splits(tmp_path: Path) -> None:
    site = read_site_file(_write(tmp_path, GOOD_ROWS), UCI_HEART_DISEASE, missing="impute")
    assert isinstance(site, SiteData) and site.x.shape == (4, 13) and site.y.tolist() == [0, 1, 0, 1]
    assert np.isnan(site.x[2]).sum() == 0  # slope, ca, thal are dropped columns: their '?' do not count


def test_a_data_frame_with_text_levels_and_nullable_columns() -> None:
    schema = Schema(
        (Numeric("age"), Categorical("smoker", ("never", "former", "current"))),
        Label("sick", positive=("yes",), negative=("no",)),
    )
    frame = pd.DataFrame(
        {
            "sick": ["yes", "no", "no", "yes"],
            "age": pd.array([61, None, 45, 70], dtype="Int64"),
            "smoker": ["former", "current", None, "never"],
            "note": ["a", "b", "c", "d"],
        }
    )
    site = read_site_frame(frame, schema, missing="impute", source="own frame")
    expected = np.array([[61, 1, 0], [np.nan, 0, 1], [45, np.nan, np.nan], [70, 0, 0]])
    assert np.array_equal(site.x, expected, equal_nan=True) and site.y.tolist() == [1, 0, 0, 1]
    assert site.notes == ("own frame: ignored column(s) not in schema 'custom': note.",)
    with pytest.raises(SiteDataError, match=r"no rows of class 0 \(sick = 'no'\) among its 2 rows left after dropp"):
        read_site_frame(frame, schema, missing="drop")


def test_read_site_frame_takes_a_data_frame() -> None:
    with pytest.raises(ConfigTypeError, match=r"read_site_frame takes a pandas DataFrame; got dict"):
        read_site_frame({"age": [1]}, UCI_HEART_DISEASE, missing="drop")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"'header' parameter of read_site_bytes"):
        read_site_bytes(b"1", UCI_HEART_DISEASE, source="b", missing="drop", header="yes")  # type: ignore[arg-type]
