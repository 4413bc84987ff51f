"""The UCI files: pins, row counts, verified download, and a clear error for every bad input."""

from __future__ import annotations

import http.server
import io
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedkit import RunConfig, run
from fedkit.data import load_silos, uci
from fedkit.errors import ChecksumError, DataError, MissingDataError


def test_pins_equal_the_shared_sha256sums_and_real_files(data_dir: Path) -> None:
    listed = dict(line.split()[::-1] for line in (data_dir / "SHA256SUMS").read_text().splitlines() if line.strip())
    for name, pin in uci.PINS.items():
        data = (data_dir / name).read_bytes()
        assert listed[name] == pin.sha256 == uci.sha256_bytes(data)
        assert len(data) == pin.size
        assert len(uci.parse(data, name)) == pin.rows


def test_row_counts_and_missing_marks(data_dir: Path) -> None:
    rows = {h: uci.read_hospital(data_dir, h) for h in uci.HOSPITALS}
    assert {h: len(a) for h, a in rows.items()} == {"cleveland": 303, "hungarian": 294, "switzerland": 123, "va": 200}
    assert all(a.shape[1] == 14 for a in rows.values())
    assert np.isnan(rows["hungarian"][:, uci.COLUMNS.index("ca")]).sum() == 291
    assert (rows["switzerland"][:, uci.COLUMNS.index("chol")] == 0).all()


def test_corrupted_byte_names_file_and_both_checksums(data_copy: Path) -> None:
    path = data_copy / "processed.va.data"
    data = bytearray(path.read_bytes())
    data[100] = ord("9") if data[100] != ord("9") else ord("8")
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError) as err:
        load_silos("flamby")
    message = str(err.value)
    assert str(path) in message and uci.PINS["processed.va.data"].sha256 in message
    assert uci.sha256_bytes(bytes(data)) in message and "verify=False" in message


def test_truncated_file_is_called_truncated(data_copy: Path) -> None:
    path = data_copy / "processed.cleveland.data"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(
        ChecksumError, match=r"processed\.cleveland\.data.*truncated: 5000 bytes where the pinned file has 18461"
    ):
        load_silos("flamby")


def test_extra_field_names_file_and_line(data_copy: Path) -> None:
    path = data_copy / "processed.hungarian.data"
    lines = path.read_text().splitlines()
    lines[6] += ",1"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ChecksumError):
        load_silos("flamby")
    with pytest.raises(
        DataError,
        match=r"processed\.hungarian\.data, line 7: 15 fields where schema .* has 14 columns",
    ):
        load_silos("flamby", verify=False)


def test_bad_token_names_file_line_and_column(data_copy: Path) -> None:
    path = data_copy / "processed.switzerland.data"
    lines = path.read_text().splitlines()
    fields = lines[2].split(",")
    fields[3] = "n/a"
    lines[2] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"switzerland\.data, line 3, column 'trestbps': 'n/a' is not a number"):
        load_silos("flamby", verify=False)


def test_missing_file_offline_says_what_where_and_from_where(data_copy: Path) -> None:
    (data_copy / "processed.va.data").unlink()
    with pytest.raises(MissingDataError) as err:
        load_silos("flamby", download=False)
    message = str(err.value)
    assert "processed.va.data" in message and str(data_copy) in message
    assert uci.ZIP_URL in message and "FEDKIT_DATA_DIR" in message


def test_unverified_files_load_only_when_asked_and_the_run_records_it(data_copy: Path) -> None:
    path = data_copy / "processed.cleveland.data"
    path.write_text(path.read_text().replace("63.0,1.0,1.0,145.0", "64.0,1.0,1.0,145.0", 1))
    with pytest.raises(ChecksumError):
        run(RunConfig(rounds=1, local_steps=2), progress=False)
    result = run(RunConfig(rounds=1, local_steps=2, verify=False), progress=False)
    summary = result.summary()
    assert summary["data"]["verified"] is False
    assert summary["data"]["sha256"]["processed.cleveland.data"] == uci.sha256_bytes(path.read_bytes())
    assert any("not verified" in n for n in summary["notes"])


class _Server:
    """A static HTTP server on 127.0.0.1 serving a dict of path -> bytes (404 otherwise)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        files_ = files

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = files_.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.end_headers()
                if body is not None:
                    self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def serve() -> Iterator[type[_Server]]:
    servers: list[_Server] = []

    def start(files: dict[str, bytes]) -> _Server:
        servers.append(_Server(files))
        return servers[-1]

    yield start  # type: ignore[misc]
    for s in servers:
        s.httpd.shutdown()
        s.httpd.server_close()


def _zip(data_dir: Path, names: list[str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, (data_dir / name).read_bytes())
    return buffer.getvalue()


def test_download_from_the_zip_writes_verified_files(tmp_path: Path, data_dir: Path, serve) -> None:
    names = [uci.file_name(h) for h in uci.HOSPITALS]
    server = serve({"/heart.zip": _zip(data_dir, names)})
    target = tmp_path / "cache"
    written = uci.download(names, target, zip_url=server.url + "/heart.zip", legacy_url=server.url + "/legacy/{name}")
    assert sorted(p.name for p in written) == sorted(names)
    assert uci.ensure_files(target, download_missing=False) == {n: uci.PINS[n].sha256 for n in names}
    assert not list(target.glob(".*part"))


def test_download_falls_back_to_legacy_files_and_leaves_no_half_file(tmp_path: Path, data_dir: Path, serve) -> None:
    names = [uci.file_name(h) for h in uci.HOSPITALS]
    good = {f"/legacy/{n}": (data_dir / n).read_bytes() for n in names[:3]}
    bad = {f"/legacy/{names[3]}": (data_dir / names[3]).read_bytes()[:1000]}  # a truncated response
    server = serve({"/heart.zip": b"not a zip", **good, **bad})
    target = tmp_path / "cache"
    with pytest.raises(MissingDataError) as err:
        uci.download(names, target, zip_url=server.url + "/heart.zip", legacy_url=server.url + "/legacy/{name}")
    assert "processed.va.data" in str(err.value) and "truncated" in str(err.value)
    assert sorted(p.name for p in target.iterdir()) == sorted(names[:3])  # verified ones kept, no partial va


def test_load_silos_parses_the_bytes_it_hashed(data_dir: Path, data_copy: Path, monkeypatch) -> None:
    # each file is swapped for an edited one as soon as it is opened: a second read would parse other rows
    # than the ones whose sha256 was checked (issue 17); the handle already open keeps the original bytes
    import builtins
    import os

    real_open, opened = builtins.open, []

    def swapping_open(file, *args, **kwargs):
        handle = real_open(file, *args, **kwargs)
        path = Path(os.fsdecode(file)) if isinstance(file, str | bytes | os.PathLike) else None
        if path is not None and path.parent == data_copy and path.name.startswith("processed."):
            opened.append(path.name)
            with real_open(path, "rb") as original:
                edited = original.read().replace(b"63.0,", b"99.0,").replace(b",0\n", b",1\n")
            with real_open(data_copy / "edited", "wb") as out:
                out.write(edited)
            os.replace(data_copy / "edited", path)
        return handle

    pristine = load_silos("hospitals", data_dir=data_dir, seed=3)
    monkeypatch.setattr(builtins, "open", swapping_open)
    monkeypatch.setattr(io, "open", swapping_open)
    swapped = load_silos("hospitals", data_dir=data_copy, seed=3)
    monkeypatch.undo()
    assert sorted(opened) == sorted(uci.file_name(h) for h in uci.HOSPITALS)  # each file opened once
    assert swapped.provenance.sha256 == pristine.provenance.sha256 and swapped.provenance.verified
    for a, b in zip(pristine.silos, swapped.silos, strict=True):
        assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert uci.sha256_bytes((data_copy / "processed.va.data").read_bytes()) != uci.PINS["processed.va.data"].sha256
