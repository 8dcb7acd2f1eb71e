"""Request ids, security headers, JSON errors and health probes on the real server."""

from __future__ import annotations

import re

import httpx

from tests.support.server import LiveServer


def test_well_formed_request_id_is_echoed_and_bound_to_the_log_line(
    dev_server: LiveServer,
) -> None:
    request_id = "trace-0123456789abcdef"
    response = httpx.get(f"{dev_server.base_url}/healthz", headers={"X-Request-ID": request_id})
    assert response.headers["x-request-id"] == request_id
    logged = dev_server.log_events_once(
        lambda e: e.get("request_id") == request_id and e.get("event") == "request"
    )
    assert [e["path"] for e in logged] == ["/healthz"]


def test_malformed_request_id_is_replaced_by_a_generated_one(dev_server: LiveServer) -> None:
    response = httpx.get(
        f"{dev_server.base_url}/healthz", headers={"X-Request-ID": "bad id\twith spaces"}
    )
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_every_response_carries_the_security_headers(dev_server: LiveServer) -> None:
    for path in ("/login", "/healthz", "/api/v1/nothing-here", "/static/style.css"):
        headers = httpx.get(dev_server.base_url + path).headers
        csp = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert "strict-transport-security" not in headers  # development mode: plain http


def test_api_errors_are_json_with_a_stable_code_and_no_stack_trace(
    dev_server: LiveServer,
) -> None:
    response = httpx.get(f"{dev_server.base_url}/api/v1/nothing-here")
    assert response.status_code == 404
    body = response.json()
    assert body["error"] == "not_found"
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text


def test_wrong_method_gets_405_with_allow_header(dev_server: LiveServer) -> None:
    response = httpx.delete(f"{dev_server.base_url}/healthz")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert "GET" in response.headers["allow"]


def test_oversized_form_is_refused_with_413_before_any_processing(
    dev_server: LiveServer,
) -> None:
    response = httpx.post(
        f"{dev_server.base_url}/login",
        content=b"username=" + b"x" * (1024 * 1024),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413
    assert "request_too_large" in response.text


def test_health_probes_answer(dev_server: LiveServer) -> None:
    assert httpx.get(f"{dev_server.base_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{dev_server.base_url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def test_cross_origin_reads_are_not_allowed(dev_server: LiveServer) -> None:
    response = httpx.get(
        f"{dev_server.base_url}/healthz", headers={"Origin": "https://evil.example"}
    )
    preflight = httpx.options(
        f"{dev_server.base_url}/login",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    for answer in (response, preflight):
        assert "access-control-allow-origin" not in answer.headers
        assert "access-control-allow-credentials" not in answer.headers
