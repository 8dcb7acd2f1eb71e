"""Our glue between Flask and Authlib: the URL Authlib sees and the response it renders."""

from __future__ import annotations

import json

import pytest
from authlib.oauth2.rfc6749.errors import InvalidClientError
from flask import Flask, request

from echo_identity.idp.authlib_glue import FlaskRequest, json_response, request_uri

app = Flask(__name__)


@pytest.mark.parametrize(
    ("path", "query"),
    [("/token", ""), ("/authorize", "a=1&b=%20x"), ("/p;x", "q"), ("/a/b:c@d", "")],
)
def test_the_uri_is_werkzeugs_url_for_ascii_paths(path: str, query: str) -> None:
    with app.test_request_context(path, query_string=query, base_url="https://id.test:8443"):
        assert request_uri(request) == request.url


def test_a_non_ascii_path_is_percent_encoded_and_the_host_comes_from_the_request() -> None:
    with app.test_request_context(
        "/users/ä b", query_string="c=%C3%A4", base_url="http://127.0.0.1:8000"
    ):
        # a URI, not Werkzeug's IRI: the query string stays as the client sent it
        assert request_uri(request) == "http://127.0.0.1:8000/users/%C3%A4%20b?c=%C3%A4"


def test_authlib_sees_the_form_and_query_parameters_each_value_kept() -> None:
    with app.test_request_context(
        "/token", method="POST", data={"grant_type": "client_credentials", "scope": ["a", "b"]}
    ):
        oauth = FlaskRequest(request)
        assert oauth.payload.grant_type == "client_credentials"
        assert oauth.payload.datalist["scope"] == ["a", "b"]
        assert oauth.form["grant_type"] == "client_credentials"


def test_an_authlib_error_renders_as_compact_json_with_its_headers() -> None:
    status, body, headers = InvalidClientError(status_code=401, description="no")()
    with app.app_context():
        response = json_response(status, body, headers)
    assert response.status_code == 401
    assert response.content_type == "application/json"
    assert json.loads(response.get_data()) == {"error": "invalid_client", "error_description": "no"}
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert response.headers["Cache-Control"] == "no-store"
