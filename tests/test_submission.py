"""Submission files and upload: exact file contents, every problem in one message, a real local server."""

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fgvc.competition.client import submit_submission
from fgvc.competition.submission import (
    ScoreReport,
    SubmissionError,
    load_submission,
    read_labels_csv,
    score_submission,
    validate_submission,
    write_submission,
)
from fgvc.data import labels_csv
from fgvc.data.labels_csv import LabelsFileError
from fgvc.errors import DataError

PREDICTIONS = {"c.jpg": "04654", "a.jpg": "00001", "b.jpg": "04654"}


# -- write / load -------------------------------------------------------------------------------------
def test_write_produces_exact_sorted_json_with_string_ids_and_no_temp_files(tmp_path):
    path = tmp_path / "out" / "submission.json"
    returned = write_submission(path, PREDICTIONS, "team-7")
    on_disk = json.loads(path.read_text(encoding="utf-8"))
    assert on_disk == returned == {"images": {"a.jpg": "00001", "b.jpg": "04654", "c.jpg": "04654"},
                                   "groupname": "team-7"}
    assert list(on_disk["images"]) == ["a.jpg", "b.jpg", "c.jpg"]
    assert '"00001"' in path.read_text(encoding="utf-8")  # a string with its zeros, not the int 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["submission.json"]
    assert load_submission(path) == returned


@pytest.mark.parametrize(
    ("predictions", "groupname", "expected"),
    [
        (PREDICTIONS, "", "groupname"),
        (PREDICTIONS, "   ", "groupname"),
        ({}, "g", "is empty"),
        ({"test/a.jpg": "01", "b\\c.jpg": "01", 3: "01"}, "g", "3 key(s) are not bare file names"),
        ({"a.jpg": 4654, "b.jpg": None}, "g", '2 value(s) are not class-ID strings'),
    ],
)
def test_write_rejects_bad_input_with_a_message(tmp_path, predictions, groupname, expected):
    path = tmp_path / "submission.json"
    with pytest.raises(SubmissionError, match=re.escape(expected)) as e:
        write_submission(path, predictions, groupname)
    assert str(path) in str(e.value)
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_failed_write_leaves_the_previous_file_alone(tmp_path):
    path = tmp_path / "submission.json"
    write_submission(path, PREDICTIONS, "g")
    before = path.read_bytes()
    with pytest.raises(SubmissionError):
        write_submission(path, {"a.jpg": 1}, "g")
    assert path.read_bytes() == before


def test_int_value_error_says_how_to_spell_class_ids(tmp_path):
    with pytest.raises(SubmissionError) as e:
        write_submission(tmp_path / "s.json", {"a.jpg": 4654}, "g")
    assert "'a.jpg': 4654" in str(e.value) and '"04654"' in str(e.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("images: nope", "is not JSON"),
        ("[1, 2]", "holds a JSON array"),
        ('{"groupname": "g"}', "missing key 'images'"),
        ('{"images": {"a.jpg": "01"}}', "missing key 'groupname'"),
        ('{"images": {"a.jpg": 4654}, "groupname": "g"}', "not class-ID strings: 'a.jpg': 4654"),
        ('{"images": {"a.jpg": "01", "a.jpg": "02"}, "groupname": "g"}', "appear more than once: 'a.jpg'"),
    ],
)
def test_load_errors_name_the_file(tmp_path, content, expected):
    path = tmp_path / "broken.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SubmissionError, match=expected) as e:
        load_submission(path)
    assert str(path) in str(e.value)


def test_load_missing_file_names_it_and_the_command_that_writes_it(tmp_path):
    with pytest.raises(SubmissionError) as e:
        load_submission(tmp_path / "nope.json")
    assert str(e.value) == (f"submission {tmp_path / 'nope.json'} does not exist; `fgvc predict RUN --data ROOT "
                            "--out DIR --group NAME` writes DIR/submission.json")


def test_load_a_folder_points_at_the_file_inside(tmp_path):
    with pytest.raises(SubmissionError) as e:
        load_submission(tmp_path)
    assert f"submission {tmp_path} is a folder" in str(e.value)
    assert str(tmp_path / "submission.json") in str(e.value)


def test_images_of_the_wrong_json_type_are_named_in_json_terms(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"images": ["a.jpg"], "groupname": "g"}', encoding="utf-8")
    with pytest.raises(SubmissionError, match="got a JSON array") as e:
        load_submission(path)
    assert "list" not in str(e.value)


# -- validate -----------------------------------------------------------------------------------------
def test_validate_reports_missing_extra_and_unknown_ids_in_one_message():
    submission = {
        "images": {"a.jpg": "04654", "b.jpg": "4654", "c.jpg": "4654", "x.jpg": "00001", "y.jpg": "zzz"},
        "groupname": "g",
    }
    expected = ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]
    with pytest.raises(SubmissionError) as e:
        validate_submission(submission, expected, ["04654", "00001"])
    message = str(e.value)
    assert "2 of 5 test file(s) have no prediction: d.jpg, e.jpg" in message
    assert "2 key(s) are not test files: 'x.jpg', 'y.jpg'" in message
    assert "3 prediction(s) use 2 unknown class ID(s)" in message
    assert "'4654' (2 image(s); did you mean '04654'?)" in message
    assert "'zzz' (1 image(s))" in message
    assert "spelled exactly as the training folders" in message


def test_validate_caps_long_lists_but_gives_full_counts():
    expected = [f"{i:03d}.jpg" for i in range(25)]
    with pytest.raises(SubmissionError) as e:
        validate_submission({"images": {"000.jpg": "1"}, "groupname": "g"}, expected, ["1"])
    assert "24 of 25 test file(s)" in str(e.value) and "(+14 more)" in str(e.value)


def test_validate_accepts_a_matching_submission():
    validate_submission({"images": dict(PREDICTIONS), "groupname": "g"}, PREDICTIONS, ["00001", "04654"])


def test_validate_reports_structure_first():
    with pytest.raises(SubmissionError, match="malformed"):
        validate_submission({"images": {"a.jpg": "1"}}, ["a.jpg"], ["1"])


# -- labels -------------------------------------------------------------------------------------------
def test_labels_csv_reader_is_the_one_shared_with_the_competition_format():
    assert read_labels_csv is labels_csv.read_labels_csv
    assert issubclass(LabelsFileError, DataError)


def test_labels_csv_handles_crlf_no_trailing_newline_and_keeps_zeros(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_bytes(b"file,class_id\r\na.jpg,04654\r\n\r\nb.jpg,00001")
    assert read_labels_csv(path) == {"a.jpg": "04654", "b.jpg": "00001"}


def test_labels_csv_header_may_be_in_any_case_and_order_with_extra_columns(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_bytes(b"\xef\xbb\xbfClass_ID, note ,File\n 007 ,x, a.jpg\n")  # BOM, spaces around cells
    assert read_labels_csv(path) == {"a.jpg": "007"}


def test_labels_csv_without_header_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("a.jpg,04654\n", encoding="utf-8")
    with pytest.raises(LabelsFileError, match="line 1: expected the header 'file,class_id'") as e:
        read_labels_csv(path)
    assert str(path) in str(e.value)


def test_labels_csv_duplicate_file_names_both_lines(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("file,class_id\na.jpg,01\nb.jpg,02\na.jpg,01\n", encoding="utf-8")
    with pytest.raises(LabelsFileError) as e:
        read_labels_csv(path)
    assert str(e.value) == (f"{path}: line 4: file 'a.jpg' is already labelled on line 2; "
                            "each test file needs exactly one label")


@pytest.mark.parametrize(("content", "expected"), [("", "is empty"), ("file,class_id\n", "no label rows"),
                                                  ("file,class_id\na.jpg\n", "line 2: need a file name")])
def test_labels_csv_other_errors(tmp_path, content, expected):
    path = tmp_path / "labels.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(LabelsFileError, match=expected):
        read_labels_csv(path)


def test_labels_csv_that_cannot_be_read_names_the_path(tmp_path):
    with pytest.raises(LabelsFileError, match=f"cannot read labels {tmp_path / 'none.csv'}"):
        read_labels_csv(tmp_path / "none.csv")


# -- score --------------------------------------------------------------------------------------------
LABELS = {"a.jpg": "01", "b.jpg": "01", "c.jpg": "02", "d.jpg": "03"}


def test_score_matches_hand_computed_accuracy_and_per_class_counts():
    submission = {"images": {"a.jpg": "01", "b.jpg": "02", "c.jpg": "02", "d.jpg": "01"}, "groupname": "g"}
    report = score_submission(submission, LABELS)
    assert report == ScoreReport(accuracy=0.5, correct=2, total=4,
                                 per_class={"01": (1, 2), "02": (1, 1), "03": (0, 1)})
    text = report.to_text({"01": "Albatross", "02": "Sparrow", "03": "Wren"})
    assert "accuracy 50.00% (2 of 4 correct)" in text
    assert "Albatross" in text and "1/2" in text and "0/1" in text
    assert json.loads(json.dumps(report.to_dict()))["per_class"]["01"] == {"correct": 1, "total": 2}
    assert "01" in report.to_text()


def test_score_validates_before_scoring():
    with pytest.raises(SubmissionError, match="1 of 4 test file"):
        score_submission({"images": {"a.jpg": "01", "b.jpg": "01", "c.jpg": "02"}, "groupname": "g"}, LABELS)
    misspelled = {"images": {"a.jpg": "1", "b.jpg": "01", "c.jpg": "02", "d.jpg": "03"}, "groupname": "g"}
    with pytest.raises(SubmissionError, match="did you mean '01'"):
        score_submission(misspelled, LABELS)


def test_score_accepts_a_known_class_absent_from_labels_when_class_ids_given():
    submission = {"images": {"a.jpg": "04", "b.jpg": "01", "c.jpg": "02", "d.jpg": "03"}, "groupname": "g"}
    with pytest.raises(SubmissionError) as e:
        score_submission(submission, LABELS)
    assert "taken from the --labels file" in str(e.value)
    assert "add --classes RUN/classes.json" in str(e.value) and "class_ids" not in str(e.value)
    report = score_submission(submission, LABELS, class_ids=["01", "02", "03", "04"])
    assert (report.correct, report.total) == (3, 4)


# -- submit against a real local server ---------------------------------------------------------------
@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """A proxy from the environment would swallow requests meant for 127.0.0.1."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


class _Scoring:
    """A scripted scoring server: each POST gets the next reply; it records what it received."""

    def __init__(self, replies):
        self.replies = list(replies)  # (status, content type, body) or "drop" or ("slow", seconds)
        self.received = []
        scoring = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                scoring.received.append((self.headers.get("Content-Type"), body))
                reply = scoring.replies.pop(0) if len(scoring.replies) > 1 else scoring.replies[0]
                if reply == "drop":
                    self.close_connection = True
                    return
                if reply[0] == "slow":
                    time.sleep(reply[1])
                    return
                status, content_type, text = reply
                payload = text.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/submit"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def scoring_server():
    started = []

    def start(*replies):
        server = _Scoring(replies)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "submission.json"
    write_submission(path, PREDICTIONS, "team-7")
    return path


JSON_OK = (200, "application/json", '{"accuracy": 0.66}')
ERROR_500 = (500, "text/html", "<html><body>Internal Server Error</body></html>")


def test_submit_retries_5xx_then_succeeds_sending_the_file_as_json(scoring_server, saved):
    server = scoring_server(ERROR_500, ERROR_500, JSON_OK)
    before = saved.read_bytes()
    delays = []
    result = submit_submission(saved, server.url, retries=3, backoff=0.5, timeout=5, sleep=delays.append)
    assert (result.accuracy, result.attempts, result.reply) == (0.66, 3, {"accuracy": 0.66})
    assert delays == [0.5, 1.0]
    assert len(server.received) == 3
    for content_type, body in server.received:
        assert content_type == "application/json"
        assert json.loads(body) == json.loads(before) and body == before
    assert saved.read_bytes() == before


def test_submit_html_reply_is_an_error_quoting_it(scoring_server, saved):
    server = scoring_server((200, "text/html", "<html><body>Query list does not match</body></html>"))
    before = saved.read_bytes()
    with pytest.raises(SubmissionError) as e:
        submit_submission(saved, server.url, timeout=5, sleep=lambda s: pytest.fail("must not retry"))
    message = str(e.value)
    assert "'Query list does not match'" in message and "<body>" not in message
    assert "HTTP 200" in message and str(saved) in message
    assert len(server.received) == 1 and saved.read_bytes() == before


def test_submit_long_reply_is_trimmed(scoring_server, saved):
    server = scoring_server((200, "text/plain", "x" * 5000))
    with pytest.raises(SubmissionError) as e:
        submit_submission(saved, server.url, timeout=5, sleep=lambda s: None)
    assert "x" * 300 + "..." in str(e.value) and "x" * 301 not in str(e.value)


def test_submit_json_without_accuracy_is_an_error(scoring_server, saved):
    server = scoring_server((200, "application/json", '{"error": "groupname unknown"}'))
    with pytest.raises(SubmissionError, match="groupname unknown"):
        submit_submission(saved, server.url, timeout=5, sleep=lambda s: None)


def test_submit_404_is_not_retried(scoring_server, saved):
    server = scoring_server((404, "text/html", "<h1>Not Found</h1>"))
    before = saved.read_bytes()
    with pytest.raises(SubmissionError) as e:
        submit_submission(saved, server.url, retries=3, timeout=5, sleep=lambda s: pytest.fail("must not retry"))
    message = str(e.value)
    assert "HTTP 404" in message and "'Not Found'" in message and "Not retried" in message
    assert str(saved) in message
    assert len(server.received) == 1 and saved.read_bytes() == before


def test_submit_retries_a_dropped_connection_and_a_timeout(scoring_server, saved):
    server = scoring_server("drop", ("slow", 0.5), JSON_OK)
    result = submit_submission(saved, server.url, retries=2, timeout=0.1, sleep=lambda s: None)
    assert (result.accuracy, result.attempts) == (0.66, 3)


def test_submit_with_nothing_listening_gives_up_and_says_the_file_is_still_there(saved):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    before = saved.read_bytes()
    delays = []
    with pytest.raises(SubmissionError) as e:
        submit_submission(saved, f"http://127.0.0.1:{port}/", retries=2, backoff=1.0, timeout=1, sleep=delays.append)
    message = str(e.value)
    assert "gave up after 3 attempt(s)" in message and "unchanged at" in message and str(saved) in message
    assert delays == [1.0, 2.0]
    assert saved.read_bytes() == before


def test_submit_refuses_an_invalid_file_or_url_before_any_request(scoring_server, saved, tmp_path):
    server = scoring_server(JSON_OK)
    path = tmp_path / "bad.json"
    path.write_text('{"images": {"a.jpg": 1}, "groupname": "g"}', encoding="utf-8")
    with pytest.raises(SubmissionError, match="bad.json"):
        submit_submission(path, server.url, sleep=lambda s: None)
    with pytest.raises(SubmissionError, match="--url must be .* http://"):
        submit_submission(saved, "file:///etc/passwd")
    with pytest.raises(SubmissionError, match="--url must be"):
        submit_submission(saved, "http://")
    with pytest.raises(SubmissionError, match="--retries must be 0 or more, got -1"):
        submit_submission(saved, server.url, retries=-1)
    assert server.received == []


def test_submit_missing_file_says_which_command_writes_it(tmp_path):
    with pytest.raises(SubmissionError) as e:
        submit_submission(tmp_path / "nope.json", "http://127.0.0.1:9/", sleep=lambda s: pytest.fail("no request"))
    message = str(e.value)
    assert f"submission {tmp_path / 'nope.json'} does not exist" in message
    assert "`fgvc predict RUN --data ROOT --out DIR --group NAME` writes DIR/submission.json" in message
    assert "write_submission" not in message and "Errno" not in message


def test_failed_upload_says_how_to_send_it_again(saved):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    with pytest.raises(SubmissionError) as e:
        submit_submission(saved, url, retries=0, timeout=1, sleep=lambda s: None)
    assert f"send it again with `fgvc submit {saved} --url {url}`" in str(e.value)
    assert "Check --url" in str(e.value) and "--retries" in str(e.value)
