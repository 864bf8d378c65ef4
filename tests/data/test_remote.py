"""convert, shrink and TableStream on data that lives elsewhere: a real S3 API served by
moto on 127.0.0.1 (pyarrow's own S3 client talks to it over HTTP), and an https-style
URL served by a local HTTP server through fsspec."""

from __future__ import annotations

import functools
import http.server
import json
import subprocess
import sys
import threading

import pandas as pd
import pytest

from memfit.data import TableStream, convert
from memfit.errors import ConvertError, StreamError

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

BUCKET = "memfit-tables"


@pytest.fixture(scope="module")
def s3_endpoint():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    for key, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    if BUCKET not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=BUCKET)
    return client


def test_convert_and_shrink_read_s3(s3, tmp_path, table_csv, small_chunks):
    local = tmp_path / "t.csv"
    table_csv(
        local, 30_000, last_row="30000,1.5,,alpha,late,2024-01-01,00:00:00,2024-01-01 00:00:00"
    )
    s3.upload_file(str(local), BUCKET, "t.csv")
    result = convert(f"s3://{BUCKET}/t.csv", tmp_path / "t.parquet")
    assert result.rows == 30_001 and result.input_file_bytes == local.stat().st_size
    remote = pd.read_parquet(tmp_path / "t.parquet")
    assert remote.equals(pd.read_parquet(convert(local, tmp_path / "l.parquet").destination))
    report = subprocess.run(
        [sys.executable, "-m", "memfit", "shrink", f"s3://{BUCKET}/t.csv", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["rows"] == 30_001
    with pytest.raises(ConvertError, match="does not exist"):
        convert(f"s3://{BUCKET}/missing.csv", tmp_path / "m.parquet")


def test_table_stream_reads_s3_csv_and_parquet(s3, tmp_path):
    frame = pd.DataFrame({"a": range(1000), "b": [i * 0.5 for i in range(1000)], "y": [0, 1] * 500})
    frame.to_csv(tmp_path / "s.csv", index=False)
    frame.to_parquet(tmp_path / "s.parquet")
    for name in ("s.csv", "s.parquet"):
        s3.upload_file(str(tmp_path / name), BUCKET, name)
        stream = TableStream(f"s3://{BUCKET}/{name}", batch_size=100, target="y")
        rows = sorted(float(v) for x, _ in stream for v in x[:, 0])
        assert rows == [float(i) for i in range(1000)]
    with pytest.raises(StreamError, match="does not exist"):
        TableStream(f"s3://{BUCKET}/nope.csv", batch_size=10)


@pytest.fixture
def http_folder(tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))

    class Quiet(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass

    server = Quiet(("127.0.0.1", 0), handler)
    handler.log_message = lambda *args: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_convert_reads_an_http_url_through_fsspec(http_folder, tmp_path, table_csv):
    pytest.importorskip("aiohttp")
    table_csv(tmp_path / "h.csv", 5_000)
    result = convert(f"{http_folder}/h.csv", tmp_path / "h.parquet")
    assert result.rows == 5_000
    assert pd.read_parquet(tmp_path / "h.parquet")["id"].tolist() == list(range(5_000))
