"""The streamrec review page in the Airflow UI: an Airflow 3 plugin (a FastAPI app + a nav entry).

What it registers (``airflow/plugins_manager.py`` and ``airflow/api_fastapi/app.py`` of Airflow 3.3):

* ``fastapi_apps``: the app below, mounted by the API server under ``/streamrec`` (``init_plugins`` mounts
  each plugin app with ``app.mount(url_prefix, app)``; ``/api/v2``, ``/ui``, ``/auth`` ... are reserved);
* ``external_views``: a nav entry whose ``url_route`` makes the UI embed ``/streamrec/`` in an iframe at
  ``/plugin/streamrec`` (without ``url_route`` it would be a plain external link). ``react_apps`` would need a
  JS bundle built with the UI's toolchain (no npm here, no CDN at run time); a server-rendered page in an
  iframe needs neither.

Behind Airflow's own login
--------------------------
Every route depends on ``airflow.api_fastapi.core_api.security.get_user``: the caller's JWT, from an
``Authorization: Bearer`` header or the ``_token`` cookie the UI's login sets (httpOnly, path ``/``, so the
iframe's requests carry it), checked by the configured auth manager (signature, expiry, revocation). Then:

* reading (the page, its data, the report files) needs GET access to the ``streamrec_update`` DAG
  (``is_authorized_dag``; simple auth manager: role viewer and up);
* the actions (rollback, re-queue) need PUT access to that DAG (simple auth manager: role user and up): who
  may steer the update DAG may steer what it builds on.

No valid token: the API answers 401 (403 for a token that does not verify) and the page redirects to the
auth manager's login URL with ``next`` back to the page. Actions are POSTs with a JSON body only: a
cross-site form cannot send ``application/json``, and the UI's cookie is ``SameSite=Lax``.

Routes (under ``/streamrec``): ``/`` the page; ``/static/*`` its JS and CSS; ``/api/overview``,
``/api/chart.svg``, ``/api/lookup?user=&k=&version=``; ``POST /api/rollback`` ``{version, reason,
expected_current}`` (then the ``streamrec_model`` Asset event, as a publish emits it: see
:func:`_model_asset_event`); ``POST /api/requeue`` ``{partition, reason}``; ``/files/reports/...`` report files of
the bucket (gate reports, Data Docs, the index) read through ``streamrec.storage.bucket`` (folder or s3://), only
under ``reports/``, served with a sandboxing Content-Security-Policy (they are generated from user data).

The logic is in ``streamrec.pipeline.review`` (core package); this file only wires it to HTTP. The bucket is
``$STREAMREC_BUCKET`` (``streamrec.pipeline.bucket_uri``), read on every request. The page's own links are
relative; the nav entry's ``href`` is ``/streamrec/``, so an API server under a sub-path (``[api] base_url``
with a path) would need that prefix added (not handled).
"""

from __future__ import annotations

import mimetypes
import posixpath
from pathlib import Path
from typing import Annotated, Any

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

URL_PREFIX = "/streamrec"
STATIC = Path(__file__).resolve().parent / "streamrec_review_static"
DAG_ID = "streamrec_update"

PAGE_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
)
REPORT_CSP = "sandbox allow-scripts allow-popups; frame-ancestors 'self'"
"""Report files (GX Data Docs carry scripts) run in an opaque origin: they cannot call Airflow's API."""


# ------------------------------------------------------------------------------------------------------------
# authentication and authorization (Airflow's)
# ------------------------------------------------------------------------------------------------------------
def _authorize(user: Any, method: str) -> None:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    if not get_auth_manager().is_authorized_dag(method=method, details=DagDetails(id=DAG_ID), user=user):
        raise HTTPException(403, f"Forbidden: needs {method} access to the {DAG_ID} DAG")


async def _reader(request: Request) -> Any:
    user = await _authenticated(request)
    _authorize(user, "GET")
    return user


async def _actor(request: Request) -> Any:
    user = await _authenticated(request)
    _authorize(user, "PUT")
    return user


async def _authenticated(request: Request) -> Any:
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.security import HTTPBearer

    bearer = await HTTPBearer(auto_error=False)(request)
    return await get_user(request, None, bearer)


Reader = Annotated[Any, Depends(_reader)]
Actor = Annotated[Any, Depends(_actor)]


def _name(user: Any) -> str | None:
    try:
        return str(user.get_name())
    except Exception:  # an auth manager's user without a name: record none rather than fail the action
        return None


# ------------------------------------------------------------------------------------------------------------
# the model Asset after a rollback
# ------------------------------------------------------------------------------------------------------------
MODEL_ASSET_NAME = (
    "streamrec_model"  # dags/_streamrec_common.MODEL_ASSET (the plugin does not import the DAGs)
)


def _api_base() -> str:
    """This API server, seen from inside it: loopback, ``[api] port``, the path of ``[api] base_url``."""
    from urllib.parse import urlparse

    from airflow.configuration import conf

    scheme = "https" if conf.get("api", "ssl_cert", fallback="") else "http"
    path = urlparse(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
    return f"{scheme}://127.0.0.1:{conf.getint('api', 'port', fallback=8080)}{path}"


def _model_asset_event(request: Request, extra: dict) -> dict:
    """Emit the ``streamrec_model`` Asset event a publish emits (consumers scheduled on the Asset see the model
    change), through Airflow's public REST API with the caller's own token: Airflow checks that the caller may
    create Asset events and records the event as coming from the API. Best effort: the rollback is already done
    when this runs, so a failure is reported in the response (``asset_event``), never raised."""
    import httpx
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    auth = request.headers.get("authorization", "")
    token = auth[7:] if auth.lower().startswith("bearer ") else request.cookies.get(COOKIE_NAME_JWT_TOKEN, "")
    try:
        with httpx.Client(
            base_url=_api_base(), headers={"Authorization": f"Bearer {token}"}, timeout=15, verify=False
        ) as api:
            found = api.get("/api/v2/assets", params={"name_pattern": MODEL_ASSET_NAME})
            found.raise_for_status()
            ids = [a["id"] for a in found.json().get("assets", []) if a.get("name") == MODEL_ASSET_NAME]
            if not ids:
                return {
                    "emitted": False,
                    "why": f"Asset {MODEL_ASSET_NAME} is not registered (no DAG parsed yet)",
                }
            made = api.post("/api/v2/assets/events", json={"asset_id": ids[0], "extra": extra})
            made.raise_for_status()
            return {"emitted": True, "id": made.json().get("id"), "extra": extra}
    except httpx.HTTPError as exc:
        return {"emitted": False, "why": f"{type(exc).__name__}: {exc}"}


# ------------------------------------------------------------------------------------------------------------
# the app
# ------------------------------------------------------------------------------------------------------------
class RollbackBody(BaseModel):
    version: str = Field(min_length=1, max_length=128)
    reason: str = Field(min_length=1, max_length=500)
    expected_current: str | None = None


class RequeueBody(BaseModel):
    partition: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=500)


def _json_only(request: Request) -> None:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise HTTPException(415, "actions take a JSON body (Content-Type: application/json)")


def create_app(bucket_uri: str | None = None, cache: Any = None) -> FastAPI:
    """The review app. ``bucket_uri`` (default: ``$STREAMREC_BUCKET`` on every request) and ``cache`` (a
    ``streamrec.pipeline.review.LookupCache``; default: a new one) are for tests and benchmarks."""
    app = FastAPI(title="streamrec review", docs_url=None, redoc_url=None, openapi_url=None)
    state: dict[str, Any] = {"cache": cache}

    def opened():
        from streamrec import pipeline

        return pipeline.open_bucket(bucket_uri)

    def lookup_cache():
        if state["cache"] is None:
            from streamrec.pipeline.review import LookupCache

            state["cache"] = LookupCache()
        return state["cache"]

    @app.exception_handler(ValueError)
    async def _bad_request(request: Request, exc: ValueError) -> JSONResponse:
        from streamrec.pipeline import VersionNotFoundError

        code = 404 if isinstance(exc, VersionNotFoundError) else 400
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.exception_handler(RuntimeError)
    async def _conflict(request: Request, exc: RuntimeError) -> JSONResponse:
        from streamrec.pipeline import StoreError, VersionNotFoundError

        if isinstance(exc, VersionNotFoundError):
            return JSONResponse({"detail": str(exc)}, status_code=404)
        if isinstance(exc, StoreError):
            return JSONResponse({"detail": str(exc)}, status_code=409)
        raise exc

    @app.get("/", include_in_schema=False)
    async def page(request: Request) -> Response:
        if not request.url.path.endswith("/"):
            return RedirectResponse(request.url.path + "/", status_code=307)
        try:
            user = await _authenticated(request)
        except HTTPException:
            from airflow.api_fastapi.app import get_auth_manager

            return RedirectResponse(get_auth_manager().get_url_login(next_url=request.url.path), 303)
        _authorize(user, "GET")
        return FileResponse(STATIC / "index.html", headers=_page_headers())

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str, user: Reader) -> Response:
        allowed = {p.name for p in STATIC.iterdir() if p.suffix in (".js", ".css")}
        if name not in allowed:
            raise HTTPException(404, "not found")
        return FileResponse(STATIC / name, headers=_page_headers())

    @app.get("/api/overview")
    def overview(user: Reader) -> JSONResponse:
        from streamrec.pipeline import review

        bucket, store = opened()
        data = review.overview(bucket, store)
        data["user"] = {"name": _name(user), "can_act": _can(user, "PUT")}
        return JSONResponse(data, headers={"Cache-Control": "no-store"})

    @app.get("/api/chart.svg")
    def chart(user: Reader) -> Response:
        from streamrec.pipeline import review

        _, store = opened()
        return Response(
            review.chart_svg(store),
            media_type="image/svg+xml",
            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )

    @app.get("/api/lookup")
    def lookup(
        user: Reader,
        user_id: Annotated[int, Query(alias="user", ge=-(2**63), lt=2**63)],
        k: Annotated[int, Query(ge=1, le=100)] = 10,
        version: str | None = None,
    ) -> JSONResponse:
        from streamrec.pipeline import review

        _, store = opened()
        return JSONResponse(review.lookup(store, user_id, k, version or None, lookup_cache()))

    @app.post("/api/rollback")
    def rollback(request: Request, body: RollbackBody, user: Actor) -> JSONResponse:
        from streamrec.pipeline import review

        _json_only(request)
        bucket, store = opened()
        event = review.rollback(
            bucket, store, body.version, body.reason, _name(user), expected_current=body.expected_current
        )
        lookup_cache().forget_pointer()
        from streamrec import pipeline

        extra = {
            **pipeline.model_event_extra(store.read_manifest(body.version)),
            "rollback_of": event.get("from"),
        }
        return JSONResponse({**event, "asset_event": _model_asset_event(request, extra)})

    @app.post("/api/requeue")
    def requeue(request: Request, body: RequeueBody, user: Actor) -> JSONResponse:
        from streamrec.pipeline import review

        _json_only(request)
        bucket, store = opened()
        return JSONResponse(review.requeue(bucket, store, body.partition, body.reason, _name(user)))

    @app.get("/files/{key:path}")
    def files(key: str, user: Reader) -> Response:
        from streamrec.pipeline import review

        bucket, _ = opened()
        try:
            data = review.read_report(bucket, key)
        except PermissionError as exc:
            raise HTTPException(403, str(exc)) from None
        except FileNotFoundError:
            raise HTTPException(404, f"no report file {key!r}") from None
        ctype = mimetypes.guess_type(posixpath.basename(key))[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/json", "image/svg+xml"):
            ctype += "; charset=utf-8"
        return Response(
            data,
            media_type=ctype,
            headers={
                "Content-Security-Policy": REPORT_CSP,
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-store",
            },
        )

    return app


def _can(user: Any, method: str) -> bool:
    try:
        _authorize(user, method)
    except HTTPException:
        return False
    return True


def _page_headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": PAGE_CSP,
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }


app = create_app()


class StreamrecReviewPlugin(AirflowPlugin):
    """Registers the review app under ``/streamrec`` and its entry in the UI's navigation."""

    name = "streamrec_review"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "streamrec review"}]
    external_views = [
        {
            "name": "streamrec review",
            "href": f"{URL_PREFIX}/",
            "url_route": "streamrec",
            "destination": "nav",
            "category": "browse",
        }
    ]
