"""The OpenAPI document is the truth: schemathesis, driven by the document the app serves,
sends property-based requests to every operation (all phases, stateful links included) as a
user, an admin and an operator client, and fails on a server error, a response that breaks
its schema, or a status the document does not list. `make contract` runs only this."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api.app import create_app
from api.appkeys import TOKENS
from core.security import CLIENT_SCOPES, CLIENT_SUBJECT
from tests.conftest import API, PASSWORD

SEED = 20261127
# Per operation and identity; with about 40 operations, three identities and the stateful
# phase, a run sends well over a thousand cases (the count is asserted below).
EXAMPLES = int(os.environ.get("CONTRACT_EXAMPLES", "12"))
MIN_CASES = 1000
ST = Path(sys.executable).with_name("st")
CONFIG = Path(__file__).with_name("schemathesis.toml")


async def _token(base: str, who: str, db: Any, app: Any) -> str:
    if who == "operator":
        return app[TOKENS].issue(subject=f"{CLIENT_SUBJECT}mr_contract", scopes=CLIENT_SCOPES)
    name = f"contract-{who}"
    async with aiohttp.ClientSession() as http:
        await http.post(
            f"{base}{API}/users",
            json={
                "username": name,
                "email": f"{name}@example.com",
                "display_name": name,
                "password": PASSWORD,
            },
        )
        if who == "admin":
            await db.users.update_one({"username": name}, {"$set": {"role": "admin"}})
        resp = await http.post(
            f"{base}{API}/auth/token",
            data={"grant_type": "password", "username": name, "password": PASSWORD},
        )
        return (await resp.json())["access_token"]


@pytest.mark.timeout(600)
async def test_every_operation_keeps_to_the_document(aiohttp_server, settings, db, tmp_path):
    app = create_app(settings)
    server = await aiohttp_server(app)
    base = str(server.make_url("")).rstrip("/")
    total = 0
    for who in ("user", "admin", "operator"):
        token = await _token(base, who, db, app)
        report = tmp_path / f"{who}.xml"
        proc = await asyncio.create_subprocess_exec(
            str(ST), "--config-file", str(CONFIG), "run", f"{base}/api/docs/openapi.json",
            "--checks", "all",
            "--phases", "examples,coverage,fuzzing,stateful",
            "--max-examples", str(EXAMPLES),
            "--seed", str(SEED),
            "--workers", "1",
            "--header", f"Authorization: Bearer {token}",
            "--request-timeout", "20",
            "--no-color",
            "--report", "junit", "--report-junit-path", str(report),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
        )  # fmt: skip
        out, _ = await proc.communicate()
        text = out.decode(errors="replace")
        assert proc.returncode == 0, f"schemathesis as {who}:\n{text[-20000:]}"
        generated = re.search(r"(\d+) generated", text)
        assert generated, text[-3000:]
        summary = [line.strip() for line in text.splitlines() if "generated" in line]
        print(f"schemathesis as {who}: {' | '.join(summary)}")  # shown with pytest -s
        total += int(generated.group(1))
    assert total >= MIN_CASES, f"only {total} cases ran"
