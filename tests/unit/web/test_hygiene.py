"""Input hygiene: each rule on a bare WSGI environ, then the screen in the real app factory."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from flask import Flask, request
from sqlalchemy import select

from echo_identity.app import create_app
from echo_identity.audit.models import AuditEvent
from echo_identity.db import Database
from echo_identity.web.csrf import csrf
from echo_identity.web.hygiene import Problem, environ_problem, form_problem
from tests.support.environment import settings_for


def wsgi(raw: bytes) -> str:
    """A WSGI environ string carrying ``raw`` (PEP 3333: bytes decoded as latin-1)."""
    return raw.decode("latin-1")


def environ(**values: Any) -> dict[str, Any]:
    return {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": "", **values}


def basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"PATH_INFO": wsgi(b"/api/v1/users/a\x00b/connections")}, Problem("path", "nul")),
        ({"PATH_INFO": wsgi(b"/api/v1/users/a\xffb/connections")}, Problem("path", "not_utf8")),
        ({"QUERY_STRING": "client_id=a%00b"}, Problem("query", "nul")),
        ({"QUERY_STRING": "client_id=a\x00b"}, Problem("query", "nul")),
        ({"QUERY_STRING": "state=%ff"}, Problem("query", "not_utf8")),
        ({"QUERY_STRING": wsgi(b"state=\xff")}, Problem("query", "not_utf8")),
        # one character split by a separator: each value alone is invalid UTF-8
        ({"QUERY_STRING": "a=%C3&b=%A9"}, Problem("query", "not_utf8")),
        ({"HTTP_USER_AGENT": wsgi(b"agent\xff")}, Problem("header", "not_utf8", "User-Agent")),
        ({"HTTP_X_CUSTOM": "a\x00b"}, Problem("header", "nul", "X-Custom")),
        (
            {"CONTENT_TYPE": wsgi(b"text/plain; x=\xc3")},
            Problem("header", "not_utf8", "Content-Type"),
        ),
        ({"HTTP_COOKIE": wsgi(b"echo_session=\xfe")}, Problem("header", "not_utf8", "Cookie")),
        # Werkzeug decodes the octal escapes of a quoted cookie value into bytes
        ({"HTTP_COOKIE": 'echo_session="a\\000b"'}, Problem("header", "nul", "Cookie")),
        ({"HTTP_AUTHORIZATION": basic(b"\xff\xfe:secret")}, Problem("credentials", "malformed")),
        ({"HTTP_AUTHORIZATION": basic(b"client\x00:secret")}, Problem("credentials", "malformed")),
        # RFC 6749 §2.3.1 form-encodes both halves: Authlib would decode %00 into a NUL
        ({"HTTP_AUTHORIZATION": basic(b"client%00:secret")}, Problem("credentials", "malformed")),
        ({"HTTP_AUTHORIZATION": basic(b"client:%ff")}, Problem("credentials", "malformed")),
        ({"HTTP_AUTHORIZATION": wsgi("Basic é".encode())}, Problem("credentials", "malformed")),
        ({"HTTP_AUTHORIZATION": wsgi(b"Basic \xff")}, Problem("credentials", "malformed")),
        (
            {"HTTP_AUTHORIZATION": "basic\t" + basic(b"\xff:x")[6:]},
            Problem("credentials", "malformed"),
        ),
        (
            {"werkzeug.proxy_fix.orig": {}, "REMOTE_ADDR": "x" * 60},
            Problem("forwarded", "not_ip"),
        ),
        ({"werkzeug.proxy_fix.orig": {}, "REMOTE_ADDR": "unknown"}, Problem("forwarded", "not_ip")),
    ],
)
def test_each_hostile_part_of_a_request_is_named(values: dict[str, Any], problem: Problem) -> None:
    assert environ_problem(environ(**values)) == problem


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"PATH_INFO": wsgi("/api/v1/users/Zoë/connections".encode())},
        {"QUERY_STRING": "next=%2Faccount&state=caf%C3%A9+au+lait&x=%25"},
        {"QUERY_STRING": wsgi("q=Zoë".encode())},
        {"HTTP_USER_AGENT": wsgi("Mozilla/5.0 (Zoë)".encode()), "HTTP_ACCEPT": "*/*"},
        {"HTTP_COOKIE": 'echo_session="a\\"b\\303\\251"'},
        {"HTTP_AUTHORIZATION": basic(b"client:s%C3%A9cret:with:colons")},
        # not base64: left to the endpoints, which answer invalid_client themselves
        {"HTTP_AUTHORIZATION": "Basic !!!"},
        {"HTTP_AUTHORIZATION": "Bearer eyJhbGciOi.J9x.y-z_"},
        {"werkzeug.proxy_fix.orig": {}, "REMOTE_ADDR": "2001:db8::1"},
        {"werkzeug.proxy_fix.orig": {}, "REMOTE_ADDR": "203.0.113.9"},
        {"REMOTE_ADDR": "not checked without a proxy in front"},
    ],
)
def test_ordinary_requests_pass(values: dict[str, Any]) -> None:
    assert environ_problem(environ(**values)) is None


@pytest.mark.parametrize(
    ("mimetype", "body", "defect"),
    [
        ("application/x-www-form-urlencoded", b"username=a%00b&password=x", "nul"),
        ("application/x-www-form-urlencoded", b"username=a\x00b", "nul"),
        ("application/x-www-form-urlencoded", b"username=%ff", "not_utf8"),
        ("application/x-www-form-urlencoded", b"username=\xc3", "not_utf8"),
        (
            "multipart/form-data",
            b'--b\r\nContent-Disposition: form-data; name="u"\r\n\r\na\x00\r\n--b--',
            "nul",
        ),
        ("multipart/form-data", b"--b\r\n\xff\r\n--b--", "not_utf8"),
        ("application/x-www-form-urlencoded", b"username=Zo%C3%AB&password=p%25%26ss", None),
        ("application/json", b'{"a": "\xff\x00"}', None),  # JSON is the views' (parse_json)
    ],
)
def test_form_bodies_are_judged_after_percent_decoding(
    mimetype: str, body: bytes, defect: str | None
) -> None:
    problem = form_problem(mimetype, body)
    assert (problem.defect if problem else None) == defect


def test_descriptions_name_the_part_and_never_repeat_the_value() -> None:
    assert Problem("header", "nul", "User-Agent").description() == (
        "The User-Agent header contains a NUL byte."
    )
    assert Problem("query", "not_utf8").description() == "The query string is not valid UTF-8."
    assert Problem("credentials", "malformed").description() == (
        "The Basic credentials are malformed."
    )


@pytest.fixture
def app(app_env: dict[str, str], database: Database) -> Flask:
    settings = settings_for({**app_env, "ECHO_TOKEN_FAILURE_RATE_LIMIT": "3/minute"})
    app = create_app(settings, database)

    @app.post("/api/v1/test-echo")
    @csrf.exempt
    def echo() -> dict[str, Any]:  # reads the body both ways after the screen read it
        return {"stream": request.stream.read().decode(), "form": request.form.to_dict()}

    return app


def events(database: Database, event_type: str) -> list[AuditEvent]:
    with database.session() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.event_type == event_type)))


def test_a_refusal_is_a_json_400_with_a_stable_code_and_no_trace(app: Flask) -> None:
    response = app.test_client().get("/api/v1/audit/events?since=%00")
    assert response.status_code == 400
    assert response.json is not None
    assert response.json["error"] == "invalid_request"
    assert response.json["error_description"] == "The query string contains a NUL byte."
    assert response.json["request_id"] == response.headers["X-Request-ID"]


def test_a_refused_sign_in_is_audited_without_user_or_typed_text(
    app: Flask, database: Database
) -> None:
    client = app.test_client()
    for _ in range(3):  # no CSRF token: the screen runs before the CSRF check
        response = client.post(
            "/login",
            data=b"username=alice%00&password=hunter2",
            content_type="application/x-www-form-urlencoded",
            headers={"Accept": "text/html"},
        )
        assert response.status_code == 400
        assert response.mimetype == "text/html"
        assert "The form body contains a NUL byte." in response.text
    [event] = events(database, "auth.login.failure")  # the repeats are counted, not stored
    assert event.outcome == "failure"
    assert event.subject is None
    assert event.details["error"] == "invalid_request"
    assert event.details["input"] == "form"
    assert "alice" not in str(event.details)
    assert "hunter2" not in str(event.details)


def test_a_refused_token_request_is_audited_and_spends_the_failure_limit(
    app: Flask, database: Database
) -> None:
    client = app.test_client()
    for _ in range(3):
        response = client.post(
            "/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": basic(b"\xff\xfe:secret")},
        )
        assert response.status_code == 401
        assert response.json is not None
        assert response.json["error"] == "invalid_client"
        assert response.headers["WWW-Authenticate"].startswith('Basic error="invalid_client"')
    [event] = events(database, "oauth.token.failed")
    assert event.details["error"] == "invalid_client"
    assert event.client_id is None
    # ECHO_TOKEN_FAILURE_RATE_LIMIT=3/minute: the three refusals used it up
    limited = client.post("/token", data={"grant_type": "client_credentials"})
    assert limited.status_code == 429


def test_a_screened_form_body_is_still_readable_as_a_stream_and_as_a_form(app: Flask) -> None:
    response = app.test_client().post(
        "/api/v1/test-echo",
        data=b"name=Zo%C3%AB&x=1",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    assert response.json == {"stream": "name=Zo%C3%AB&x=1", "form": {"name": "Zoë", "x": "1"}}


def test_the_screen_answers_before_the_csrf_check_and_starts_no_session(app: Flask) -> None:
    response = app.test_client().post(
        "/account/password",
        data=b"password=%ff",
        content_type="application/x-www-form-urlencoded",
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 400
    assert response.json is not None
    assert response.json["error"] == "invalid_request"  # not csrf_failed: CSRF never ran
    assert "Set-Cookie" not in response.headers
