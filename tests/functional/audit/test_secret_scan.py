"""Issue 5 acceptance: after a run of every flow, no stored event, log line, report or export
contains a raw token, code, password or secret.

One development server runs every flow that handles a secret: sign-in (with a typo and with a
password typed into the name field), the code flow with PKCE (userinfo, refresh, refresh-token
reuse, code reuse, introspection, revocation, logout), client credentials and /verify, the vault
connect flow and token API against a real upstream, and /log with secrets in the message. Then
the worker seals and runs detection, and the report and the SIEM export are written. Every
secret seen on the wire is then looked for in every database column, the server's log output,
both report formats, the export and the CLI output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from sqlalchemy import MetaData, select

from echo_identity.db import Database
from tests.factories import create_user
from tests.support.browser import Browser
from tests.support.oidc import (
    LOGOUT_URI,
    RelyingParty,
    client_credentials_token,
    log_client,
    query_of,
    service_client,
    web_client,
)
from tests.support.secret_scan import echo_shaped
from tests.support.server import LiveServer, run_cli
from tests.support.vault import (
    Upstream,
    fetch_vault_token,
    run_connect_flow,
    vault_api_token,
    vault_service_client,
)


def _stored_values(env: dict[str, str]) -> str:
    """Every column of every row, as one text."""
    database = Database(env["ECHO_DATABASE_URL"])
    metadata = MetaData()
    metadata.reflect(database.engine)
    values: list[str] = []
    try:
        with database.engine.connect() as connection:
            for table in metadata.sorted_tables:
                for row in connection.execute(select(table)):
                    values.extend(repr(value) for value in row)
    finally:
        database.dispose()
    return "\n".join(values)


def _token_secrets(token: dict[str, Any]) -> list[str]:
    """The secret parts of a token response: each token, and a JWT's signature on its own."""
    found = []
    for name in ("access_token", "refresh_token", "id_token"):
        value = token.get(name)
        if value:
            found.append(str(value))
            if value.count(".") == 2:
                found.append(str(value).rsplit(".", 1)[1])
    return found


def _code_flow(server: LiveServer, browser: Browser, secrets: list[str]) -> None:
    client = web_client(server)
    secrets.append(client.client_secret or "")
    for attempt in ("replayed code", "refresh and logout"):
        rp = RelyingParty(server, client, "openid profile email offline_access")
        try:
            location = rp.authorize(browser)
            code = query_of(location)["code"]
            secrets.append(code)
            token = rp.fetch_token(location)
            secrets.extend(_token_secrets(token))
            if attempt == "replayed code":  # refused, and the tokens it produced are revoked
                replay = httpx.post(
                    rp.metadata["token_endpoint"],
                    data={
                        "grant_type": "authorization_code",
                        "code": code,
                        "redirect_uri": str(rp.oauth.redirect_uri),
                        "code_verifier": rp.code_verifier,
                    },
                    auth=(client.client_id, client.client_secret or ""),
                )
                assert replay.status_code == 400
                continue
            assert rp.oauth.get(rp.metadata["userinfo_endpoint"]).status_code == 200
            old_refresh = token["refresh_token"]
            refreshed = rp.oauth.refresh_token(
                rp.metadata["token_endpoint"], refresh_token=old_refresh
            )
            secrets.extend(_token_secrets(refreshed))
            reuse = httpx.post(  # a rotated refresh token comes back: the family is revoked
                rp.metadata["token_endpoint"],
                data={"grant_type": "refresh_token", "refresh_token": old_refresh},
                auth=(client.client_id, client.client_secret or ""),
            )
            assert reuse.status_code == 400
            rp.oauth.introspect_token(
                rp.metadata["introspection_endpoint"], token=refreshed["access_token"]
            )
            rp.oauth.revoke_token(
                rp.metadata["revocation_endpoint"], token=refreshed["access_token"]
            )
            hint = {"id_token_hint": token["id_token"], "post_logout_redirect_uri": LOGOUT_URI}
            assert browser.get("/logout?" + urlencode(hint)).status_code == 302
        finally:
            rp.close()


def _service_calls(server: LiveServer, secrets: list[str]) -> None:
    service = service_client(server)
    secrets.append(service.client_secret or "")
    token = client_credentials_token(server, service)
    secrets.extend(_token_secrets(token))
    verified = httpx.post(
        f"{server.base_url}/verify",
        data={"token": token["access_token"]},
        auth=(service.client_id, service.client_secret or ""),
    )
    assert verified.status_code == 200
    wrong = httpx.post(
        f"{server.base_url}/token",
        data={"grant_type": "client_credentials"},
        auth=(service.client_id, "not-" + (service.client_secret or "")),
    )
    assert wrong.status_code == 401
    secrets.append("not-" + (service.client_secret or ""))


def _vault_flow(server: LiveServer, upstream: Upstream, secrets: list[str]) -> None:
    secrets.append(upstream.client.client_secret or "")
    owner = create_user(server.env["ECHO_DATABASE_URL"])
    secrets.append(owner.password)
    billing = vault_service_client(server, upstream.name)  # before the owner's consent names it
    secrets.append(billing.client_secret or "")
    _browser, upstream_user = run_connect_flow(server, upstream, owner)
    secrets.append(upstream_user.password)
    bearer = vault_api_token(server, billing)
    secrets.append(bearer)
    for body in ({}, {"force_refresh": True}):
        handed_out = fetch_vault_token(server, bearer, owner.sub, upstream.name, body)
        assert handed_out.status_code == 200, handed_out.text
        secrets.extend(_token_secrets(handed_out.json()))


def _shipped_logs(server: LiveServer, secrets: list[str]) -> None:
    sender = log_client(server)
    secrets.append(sender.client_secret or "")
    bearer = client_credentials_token(server, sender)["access_token"]
    leaked = "s3cr3t-" + (sender.client_secret or "")[:16]
    secrets.append(leaked)
    shipped = httpx.post(
        f"{server.base_url}/log",
        headers={"Authorization": f"Bearer {bearer}"},
        json=[
            {"level": "error", "message": f"upstream refused password={leaked}"},
            {"level": "info", "message": "retrying", "fields": {"api_key": leaked}},
        ],
    )
    assert shipped.status_code == 201, shipped.text


def test_no_event_log_line_report_or_export_contains_a_secret_after_every_flow(
    dev_server: LiveServer, upstream: Upstream, tmp_path: Path
) -> None:
    secrets: list[str] = []
    user = create_user(dev_server.env["ECHO_DATABASE_URL"])
    secrets.append(user.password)
    browser = Browser(dev_server)
    typo = "typo-" + user.password
    secrets.append(typo)
    assert browser.login(user.username, typo).status_code == 401
    assert Browser(dev_server).login(user.password, user.password).status_code == 401
    assert browser.login(user.username, user.password).status_code == 302

    _code_flow(dev_server, browser, secrets)
    _service_calls(dev_server, secrets)
    _vault_flow(dev_server, upstream, secrets)
    _shipped_logs(dev_server, secrets)

    outputs = [run_cli(dev_server.env, "worker", "--once", "--json")]
    report_json, report_html, export = (
        tmp_path / "report.json",
        tmp_path / "report.html",
        tmp_path / "events.ocsf.jsonl",
    )
    outputs += [
        run_cli(
            dev_server.env, "report", "--since", "1d", "--format", "json", "--out", str(report_json)
        ),
        run_cli(
            dev_server.env, "report", "--since", "1d", "--format", "html", "--out", str(report_html)
        ),
        run_cli(dev_server.env, "audit", "export", "--since", "1d", "--out", str(export)),
    ]
    for result in outputs:
        assert result.returncode == 0, result.stderr

    places = {
        "database": _stored_values(dev_server.env),
        "server log": dev_server.logs(),
        "report (json)": report_json.read_text(),
        "report (html)": report_html.read_text(),
        "OCSF export": export.read_text(),
        "CLI output": "\n".join(r.stdout + r.stderr for r in outputs),
    }
    # The places really hold this run: its events, its report counts and its export lines.
    assert user.username in places["server log"] or "login_succeeded" in places["server log"]
    assert json.loads(report_json.read_text())
    assert export.read_text().count("\n") >= 10
    secrets = [s for s in dict.fromkeys(secrets) if len(s) >= 8]
    assert len(secrets) >= 25
    leaks = [
        (where, secret[:6] + "…")
        for where, text in places.items()
        for secret in secrets
        if secret in text
    ]
    assert leaks == []
    # And anything shaped like an Echo secret (docs/oidc.md "Secret formats"), whether or not
    # this run saw it on the wire: what an outside secret scanner would flag.
    shaped = [
        (where, found[:10] + "…") for where, text in places.items() for found in echo_shaped(text)
    ]
    assert shaped == []
