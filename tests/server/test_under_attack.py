"""The scoring server under attack (issue 18): bounded validation, the body bound, invalid attempts rate-limited,
crafted bodies answered with 400s, open mode's team names, canonical stored bodies, private files, short echoes."""

from __future__ import annotations

import json
import os
import stat
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fgvc.competition.submission
from fgvc.competition.submission import SubmissionError, load_submission, validate_submission
from fgvc.server import store
from fgvc.server.competition import CompetitionCache
from fgvc.server.db import Database

from .conftest import CLASSES, N_IMAGES, add_team, after_deadline, bearer, make_comp

API = "/api/submissions"
NOTHING = "Nothing was stored and no quota was used."


def _swap(comp, **changes) -> dict:
    body = comp.body("alpha")
    body["images"] = {**body["images"], **changes}
    return body


def _test_client(service):
    from starlette.testclient import TestClient

    from fgvc.server.app import create_app

    return TestClient(create_app(service), raise_server_exceptions=False)


@pytest.fixture
def token(service):
    return add_team(service, "alpha")


# -- 1. validation is linear and bounded --------------------------------------------------------------
def test_a_body_of_unknown_names_and_classes_costs_ten_hints_and_lists_ten_of_each(monkeypatch):
    """50,000 unknown names with 50,000 unknown class IDs against 200 classes: every count in full, ten
    items shown per problem, ten did-you-mean lookups (the old code looked every class up for every value)."""
    calls = []
    real = fgvc.competition.submission._respelling_hint
    monkeypatch.setattr(fgvc.competition.submission, "_respelling_hint", lambda v, s: calls.append(v) or real(v, s))
    n = 50_000
    submission = {"images": {f"zz{i:06d}.jpg": f"x{i:06d}" for i in range(n)}, "groupname": "g"}
    with pytest.raises(SubmissionError) as e:
        validate_submission(submission, [f"{i:04d}.jpg" for i in range(6000)], [f"{i:05d}" for i in range(200)])
    message = str(e.value)
    assert len(calls) == 10
    assert "6000 of 6000 test file(s) have no prediction: 0000.jpg, 0001.jpg" in message and "(+5990 more)" in message
    assert f"{n} key(s) are not test files: 'zz000000.jpg', 'zz000001.jpg'" in message and "(+49990 more)" in message
    assert f"{n} prediction(s) use {n} unknown class ID(s): 'x000000' (1 image(s))" in message
    assert message.count("image(s)") == 10 and len(message) < 2000


def test_a_malformed_body_formats_ten_bad_values_and_counts_all(monkeypatch):
    calls = []
    real = fgvc.competition.submission.echo
    monkeypatch.setattr(fgvc.competition.submission, "echo", lambda v, *a: calls.append(v) or real(v, *a))
    submission = {"images": {f"{i}.jpg": i for i in range(20_000)}, "groupname": "g"}
    with pytest.raises(SubmissionError) as e:
        validate_submission(submission, [], ["1"])
    assert len(calls) == 2 * 10  # a name and its value for each of the ten shown
    assert "20000 value(s) are not class-ID strings: '0.jpg': 0, '1.jpg': 1," in str(e.value)
    assert "'9.jpg': 9 ... (+19990 more)" in str(e.value) and "'10.jpg'" not in str(e.value)


@pytest.mark.parametrize(("value", "hint"), [("4654", "04654"), (" 04654 ", "04654"), ("０４６５４", "04654"),
                                             ("²", "00002"), ("0" * 3 + "3", "00003"), ("1" * 5000, None)])
def test_did_you_mean_needs_no_int_and_knows_other_spellings(value, hint):
    with pytest.raises(SubmissionError) as e:
        validate_submission({"images": {"a.jpg": value}, "groupname": "g"}, ["a.jpg"], CLASSES)
    assert (f"did you mean {hint!r}?" in str(e.value)) if hint else ("did you mean" not in str(e.value))


def test_the_body_bound_is_derived_from_the_test_set_and_refuses_before_parsing(client, comp, service, token,
                                                                                 monkeypatch):
    # 28 names of 13 characters (15 as JSON strings), longest class ID 5 (7): 2 * 28 * (15 + 7 + 32) + 64 KiB
    assert service.competitions.current().max_body_bytes == 2 * 28 * (15 + 7 + 32) + 65536 == 68560
    monkeypatch.setattr("fgvc.server.service.parse_submission_text", lambda *a, **k: pytest.fail("parsed"))
    crafted = b"[" + b"{}," * (68560 // 3) + b"{}]"  # the 16 MB attack, cut to just over this competition's bound
    reply = client.post(API, content=crafted, headers=bearer(token))
    assert reply.status_code == 413 and reply.json()["error"] == "body_too_large"
    assert reply.json()["message"] == (
        f"the request body is {len(crafted):,} bytes, more than a submission for this competition's 28 test images "
        f"can need (68,560 bytes at most, pretty-printed with room to spare); send the file `fgvc predict` wrote. "
        f"{NOTHING}")
    def chunks():  # streamed without a Content-Length: refused as soon as the bound is passed, size unknown
        yield from (b"[" + b"{}," * 30_000 for _ in range(100))

    streamed = client.post(API, content=chunks(), headers=bearer(token))
    assert streamed.status_code == 413 and streamed.json()["message"].startswith(
        "the request body is more than a submission for this competition's 28 test images can need")
    with pytest.raises(Exception) as e:  # the service's own check, whoever reads the body
        service.submit(crafted, authorization=f"Bearer {token}")
    assert e.value.status == 413 and e.value.message == reply.json()["message"]
    monkeypatch.undo()
    pretty = json.dumps(comp.body("alpha"), indent=8, ensure_ascii=True).encode()  # generous indenting is fine
    assert client.post(API, content=pretty, headers=bearer(token)).status_code == 200


# -- 1. invalid attempts are rate-limited ------------------------------------------------------------
def test_invalid_attempts_are_limited_per_team_with_a_429_that_says_when(client, comp, service, token, clock):
    other = add_team(service, "beta")
    bad = json.dumps(_swap(comp, **{comp.public[0]: "nope"}))
    for _ in range(10):  # a burst of 10 is checked
        assert client.post(API, content=bad, headers=bearer(token)).status_code == 400
    refused = client.post(API, json=comp.body("alpha"), headers=bearer(token))  # not even read: it might be valid
    assert refused.status_code == 429 and refused.headers["retry-after"] == "60"
    data = refused.json()
    assert data["error"] == "too_many_invalid_submissions" and data["retry_after_seconds"] == 60
    assert data["message"] == ("team 'alpha' sent too many invalid submissions: this server checks 10 in a row, then "
                               "one every 60 s. Try again in 1 min (Retry-After), with the problems the last refusal "
                               f"named fixed. {NOTHING}")
    assert client.post(API, json=comp.body("beta"), headers=bearer(other)).status_code == 200  # beta's own bucket
    clock.now += timedelta(seconds=59)
    assert client.post(API, json=comp.body("alpha"), headers=bearer(token)).headers["retry-after"] == "1"
    clock.now += timedelta(seconds=1)
    assert client.post(API, json=comp.body("alpha"), headers=bearer(token)).status_code == 200
    assert client.post(API, json=comp.body("alpha", public_right=1), headers=bearer(token)).status_code == 200
    assert len(store.all_submissions(service.db)) == 3  # valid ones spend nothing


def test_invalid_attempts_are_limited_per_address_in_open_mode(comp, make_service):
    service = make_service(comp, auth="open", invalid_burst=2)
    bad = json.dumps({"images": {}, "groupname": "g"}).encode()
    for _ in range(2):
        with pytest.raises(Exception) as e:
            service.submit(bad, client="10.0.0.1")
        assert e.value.status == 400
    with pytest.raises(Exception) as e:
        service.submit(json.dumps(comp.body("g")).encode(), client="10.0.0.1")
    assert e.value.status == 429 and e.value.headers == {"Retry-After": "60"}
    assert "your address ('10.0.0.1') sent too many invalid submissions" in e.value.message
    assert service.submit(json.dumps(comp.body("g")).encode(), client="10.0.0.2")["team"] == "g"


# -- 2. crafted bodies are 400s, never 500s ----------------------------------------------------------
CRAFTED = {
    "superscript two": (lambda comp: _swap(comp, **{comp.public[0]: "²"}),
                        "1 prediction(s) use 1 unknown class ID(s): '²' (1 image(s); did you mean '00002'?)"),
    "5,000 digits": (lambda comp: _swap(comp, **{comp.public[0]: "1" * 5000}),
                     f"1 prediction(s) use 1 unknown class ID(s): {'1' * 80!r}... (5,000 characters) (1 image(s))"),
    "lone surrogate": (lambda comp: _swap(comp, **{"\ud800.jpg": "00001"}),
                       "1 key(s) are not test files: '\\ud800.jpg'"),
}


@pytest.mark.parametrize("kind", list(CRAFTED))
def test_crafted_bodies_are_400s_naming_the_problem(client, comp, service, token, kind):
    make, expected = CRAFTED[kind]
    reply = client.post(API, content=json.dumps(make(comp)).encode(), headers=bearer(token))
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"] == "invalid_submission" and expected in reply.json()["message"]


def test_a_huge_name_is_cut_in_every_message(client, comp, service, token):
    name = "x" * 50_000 + ".jpg"
    reply = client.post(API, json=_swap(comp, **{name: "00001"}), headers=bearer(token))
    assert reply.status_code == 400
    assert f"1 key(s) are not test files: {'x' * 80!r}... (50,004 characters);" in reply.json()["message"]
    assert len(reply.content) < 1500
    mismatch = client.post(API, json=comp.body("g" * 50_000), headers=bearer(token))
    assert mismatch.status_code == 403 and f"'groupname' is {'g' * 80!r}... (50,000 characters) but" in mismatch.text
    with pytest.raises(SubmissionError) as e:  # the validator itself, with a 1 MB name
        validate_submission({"images": {"y" * 1_000_000: "1"}, "groupname": "g"}, [], ["1"])
    assert len(str(e.value)) < 500 and "(1,000,000 characters)" in str(e.value)


# -- 3. open mode: token teams, look-alikes, new teams per address ------------------------------------
@pytest.fixture
def open_service(comp, make_service):
    return make_service(comp, auth="open")


def test_open_mode_refuses_the_name_of_a_token_team_unless_its_token_is_sent(open_service, comp):
    token = add_team(open_service, "alpha")
    with _test_client(open_service) as client:
        refused = client.post("/results/", content=json.dumps(comp.body("alpha")))
        assert refused.status_code == 403 and refused.json()["error"] == "team_has_token"
        assert refused.json()["message"] == ("team 'alpha' submits with its token: send it as 'Authorization: Bearer "
                                             f"<token>' (`fgvc submit FILE --url URL --token TOKEN`). {NOTHING}")
        assert store.all_submissions(open_service.db) == []
        assert client.post("/results/", content=json.dumps(comp.body("alpha")), headers=bearer(token)).json()[
            "team"] == "alpha"


@pytest.mark.parametrize("look_alike", ["\u0430lpha", "ALPHA", "\uff41\uff4c\uff50\uff48\uff41", "a1pha"])
def test_open_mode_refuses_a_look_alike_of_an_existing_team(open_service, comp, clock, look_alike):
    with _test_client(open_service) as client:
        assert client.post("/results/", content=json.dumps(comp.body("alpha"))).status_code == 200
        refused = client.post("/results/", content=json.dumps(comp.body(look_alike)))
        assert refused.status_code == 409 and refused.json()["error"] == "team_name_look_alike"
        assert refused.json()["message"].startswith(f"team name {ascii(look_alike)} looks like the existing team "
                                                    "'alpha'")
        assert [t.name for t, _ in store.list_teams(open_service.db)] == ["alpha"]
        assert client.post("/results/", content=json.dumps(comp.body("alpha-2"))).status_code == 200
        clock.now = after_deadline()  # then the deadline is what a new name hears first
        closed = client.post("/results/", content=json.dumps(comp.body(look_alike)))
        assert closed.status_code == 403 and closed.json()["error"] == "deadline_passed"


def test_open_mode_caps_new_teams_per_address_and_day(open_service, comp, clock):
    with _test_client(open_service) as client:  # the test client's address is 'testclient'
        for name in ("t1", "t2", "t3"):
            assert client.post("/results/", content=json.dumps(comp.body(name))).status_code == 200
        refused = client.post("/results/", content=json.dumps(comp.body("t4")))
        assert refused.status_code == 429 and refused.headers["retry-after"] == str(12 * 3600)
        assert refused.json()["message"] == (
            "3 new team(s) were already created today from your address ('testclient'), the most this server allows "
            "(`fgvc server run --new-teams-per-address`); submit as one of them, or try again after "
            f"2027-01-11T00:00:00Z, in 12 h 0 min. {NOTHING}")
        assert client.post("/results/", content=json.dumps(comp.body("t1", public_right=2))).status_code == 200
        assert open_service.submit(json.dumps(comp.body("t5")).encode(), client="10.0.0.9")["team"] == "t5"
        clock.now += timedelta(hours=12)
        assert client.post("/results/", content=json.dumps(comp.body("t4"))).status_code == 200


def test_the_cap_is_a_server_option(comp):
    from fgvc.cli import build_parser

    args = build_parser().parse_args(["server", "run", str(comp.directory), "--auth", "open"])
    assert args.new_teams_per_address == 3
    args = build_parser().parse_args(["server", "run", str(comp.directory), "--new-teams-per-address", "0"])
    assert args.new_teams_per_address == 0


# -- 4. canonical stored bodies -----------------------------------------------------------------------
def test_the_stored_body_is_compact_canonical_json_without_padding_or_extra_keys(client, comp, service, token):
    body = comp.body("alpha", comment="x" * 1000)
    raw = json.dumps(body, indent=4).encode() + b" " * 30_000
    reply = client.post(API, content=raw, headers=bearer(token, **{"Idempotency-Key": "k"}))
    assert reply.status_code == 200, reply.text
    stored, _ = store.stored_body(service.db, reply.json()["submission_id"])
    canonical = {"groupname": "alpha", "images": comp.body("alpha")["images"]}
    assert stored == json.dumps(canonical, separators=(",", ":"), sort_keys=True).encode()
    assert b" " not in stored and len(stored) < 40 * N_IMAGES
    again = client.post(API, content=raw, headers=bearer(token, **{"Idempotency-Key": "k"}))
    assert again.json()["replayed"] is True  # the key still matches the body as sent


# -- 5. private files, BOM --------------------------------------------------------------------------
def test_the_database_and_its_wal_and_shm_are_private_whatever_the_umask(tmp_path, make_service):
    old = os.umask(0o022)
    try:
        comp = make_comp(tmp_path, None)
        service = make_service(comp)
        token = add_team(service, "alpha")
        service.submit(json.dumps(comp.body("alpha")).encode(), authorization=f"Bearer {token}")
    finally:
        os.umask(old)
    names = ["competition.sqlite3", "competition.sqlite3-wal", "competition.sqlite3-shm", "labels.csv",
             "competition.json"]
    assert {n: stat.S_IMODE(os.stat(comp.directory / n).st_mode) for n in names} == dict.fromkeys(names, 0o600)


def test_a_database_made_world_readable_is_made_private_when_opened(tmp_path):
    comp = make_comp(tmp_path, None)
    path = comp.directory / "competition.sqlite3"
    Database(CompetitionCache(comp.directory).current().database_url).dispose()
    os.chmod(path, 0o644)
    Database(CompetitionCache(comp.directory).current().database_url).dispose()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_utf8_bom_before_the_json_is_accepted(client, comp, token, tmp_path):
    raw = b"\xef\xbb\xbf" + json.dumps(comp.body("alpha")).encode()
    assert client.post(API, content=raw, headers=bearer(token)).status_code == 200
    path = tmp_path / "bom.json"
    path.write_bytes(raw)
    assert load_submission(path) == comp.body("alpha")


# -- 2. any JSON, any bytes: never a 500 (Hypothesis) -------------------------------------------------
# text with lone surrogates too, and the values that once gave 500s
TEXT = st.text(st.characters(exclude_categories=())) | st.sampled_from(["²", "1" * 5000, "\ud800.jpg", "\udfff"])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)


def near_valid(names: list[str]) -> st.SearchStrategy[dict]:
    """Submission-shaped objects: real and arbitrary names, real and arbitrary class IDs, odd groupnames."""
    images = st.dictionaries(st.sampled_from(names) | TEXT, st.sampled_from(CLASSES) | TEXT | JSON_VALUES,
                             max_size=len(names) + 2)
    return st.fixed_dictionaries({"images": images | JSON_VALUES},
                                 optional={"groupname": st.sampled_from(["alpha", "beta"]) | TEXT | JSON_VALUES,
                                           "extra": JSON_VALUES})


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(value=JSON_VALUES | near_valid(["a.jpg", "b.jpg", "c.jpg"]))
def test_the_validator_answers_any_json_with_nothing_or_a_short_encodable_submission_error(value):
    try:
        validate_submission(value, ["a.jpg", "b.jpg", "c.jpg"], CLASSES)
    except SubmissionError as e:
        assert len(str(e).encode("utf-8")) < 5000  # encodable (no lone surrogate) and bounded


@FUZZ
@given(text=TEXT | JSON_VALUES.map(json.dumps) | near_valid(["a.jpg"]).map(json.dumps))
def test_parsing_any_text_raises_nothing_but_what_the_server_answers_with_a_400(text):
    try:
        fgvc.competition.submission.parse_submission_text(text, "the request body")
    except SubmissionError as e:
        str(e).encode("utf-8")
    except (ValueError, RecursionError):  # the decoder's own limits (a number too long): the service's 400
        pass


def _bodies(comp) -> st.SearchStrategy[bytes]:
    as_json = (JSON_VALUES | near_valid(sorted(comp.labels))).map(lambda v: json.dumps(v).encode())
    return st.binary(max_size=200) | as_json | st.just(json.dumps(comp.body("alpha")).encode())


@pytest.fixture(params=["token", "open"])
def fuzz_post(request, comp, make_service):
    """POST a body to a service without limits on invalid attempts or new teams, so that every body is checked;
    one service for all of Hypothesis's examples (their state piling up is part of the test)."""
    service = make_service(comp, auth=request.param, invalid_burst=10**9, new_teams_per_address=0)
    token = add_team(service, "alpha")
    path, headers = (API, bearer(token)) if request.param == "token" else ("/results/", {})
    with _test_client(service) as client:
        yield lambda body: client.post(path, content=body, headers=headers)


@FUZZ
@given(data=st.data())
def test_the_endpoint_answers_any_body_with_json_and_never_a_500(comp, fuzz_post, data):
    reply = fuzz_post(data.draw(_bodies(comp)))
    assert reply.status_code in (200, 400, 403, 409, 413, 429), reply.text
    assert isinstance(reply.json()["accuracy" if reply.status_code == 200 else "message"], (str, float))
