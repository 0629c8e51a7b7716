"""Operator routes: start, watch, list and cancel MovieLens import jobs."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from aiohttp_apigami import json_schema, match_info_schema, querystring_schema, response_schema

from api.appkeys import QUEUE, SETTINGS
from api.handlers import principal
from api.http import authenticated, docs, errors, json_response, next_url, page_after
from api.schemas import (
    ImportCreateSchema,
    ImportIdPath,
    ImportJobSchema,
    ImportPageSchema,
    PageQuery,
)
from core.errors import InvalidInput
from core.imports import jobs as import_service
from core.security import CLIENT_SUBJECT
from models import ImportJob, PydanticObjectId

_job = ImportJobSchema()
_jobs = ImportJobSchema(many=True)
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def job_view(job: ImportJob) -> dict[str, Any]:
    """The job as operators see it: the stored report split into progress, counts, bad rows."""
    report = job.report
    return {
        **job.model_dump(
            include={
                "id",
                "source",
                "path",
                "url",
                "dry_run",
                "status",
                "cancel_requested",
                "attempts",
                "waiting_for",
                "error",
                "created_by_client",
                "created_at",
                "started_at",
                "finished_at",
            }
        ),
        "progress": {name: p.model_dump() for name, p in report.progress.items()},
        "counts": report.model_dump(include={"movies", "users", "ratings", "tags", "merged"}),
        "bad_rows": {
            "count": report.bad_rows,
            "samples": [b.model_dump() for b in report.bad_samples],
        },
        "timings": report.timings,
    }


def _location(request: web.Request, job: ImportJob) -> str:
    return str(request.app.router["import_job"].url_for(import_id=str(job.id)))


@docs(
    tags=["imports"],
    summary="Start a MovieLens import (operators)",
    description="Send an Idempotency-Key header to make retries safe: the same key returns "
    "the same job.",
    parameters=[{"in": "header", "name": "Idempotency-Key", "schema": {"type": "string"}}],
    responses=errors(409, 415, 422, 503),
)
@authenticated("imports:write")
@json_schema(ImportCreateSchema)
@response_schema(ImportJobSchema, 202)
async def create_import(request: web.Request) -> web.Response:
    """Queue an import job."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _KEY.match(key):
        raise InvalidInput("Bad Idempotency-Key.", {"Idempotency-Key": ["1-255 visible ASCII."]})
    caller = principal(request)
    settings = request.app[SETTINGS]
    job, _ = await import_service.create_job(
        body=request["json"],
        idempotency_key=key,
        # An operator client with imports:write starts imports too (the README's use).
        created_by=None if caller.is_client else PydanticObjectId(caller.subject),
        created_by_client=caller.subject.removeprefix(CLIENT_SUBJECT) if caller.is_client else None,
        import_root=settings.imports_dir,
        url_policy=settings.import_url_policy,
        queue=request.app[QUEUE],
    )
    return json_response(
        _job.dump(job_view(job)), status=202, headers={"Location": _location(request, job)}
    )


@docs(tags=["imports"], summary="Import jobs, newest first", responses=errors(400, 422))
@authenticated("imports:write")
@querystring_schema(PageQuery)
@response_schema(ImportPageSchema, 200)
async def list_imports(request: web.Request) -> web.Response:
    """A page of import jobs."""
    query = request["querystring"]
    page = await import_service.list_jobs(
        after=page_after(request), offset=query["offset"], limit=query["limit"]
    )
    items = _jobs.dump([job_view(j) for j in page.items])
    return json_response({"items": items, "next": next_url(request, page.after)})


@docs(
    tags=["imports"], summary="An import job: status, progress, counts", responses=errors(404, 422)
)
@authenticated("imports:write")
@match_info_schema(ImportIdPath)
@response_schema(ImportJobSchema, 200)
async def get_import(request: web.Request) -> web.Response:
    """One import job."""
    job = await import_service.get_job(job_id=request["match_info"]["import_id"])
    return json_response(_job.dump(job_view(job)))


@docs(
    tags=["imports"],
    summary="Cancel an import job",
    description="A queued job is cancelled at once; a running one stops after its current "
    "batch (what it wrote stays, consistent).",
    responses=errors(404, 409, 422),
)
@authenticated("imports:write")
@match_info_schema(ImportIdPath)
@response_schema(ImportJobSchema, 202)
async def cancel_import(request: web.Request) -> web.Response:
    """Cancel one import job."""
    job = await import_service.cancel_job(job_id=request["match_info"]["import_id"])
    return json_response(_job.dump(job_view(job)), status=202)
