"""The scorer API: app factory, lifespan (model + store, once per process), routes and error handlers.

Handlers are thin: parse, grab the current model bundle, call the Scorer, serialise with orjson. The request
body is validated by the shared :class:`fraudwatch.events.Transaction` straight from the raw JSON bytes
(``model_validate_json``), exactly as the stream validates Kafka records, so the API and the stream accept
and refuse the same events: the same plausibility bounds (:class:`fraudwatch.events.EventBounds`, from
Settings), judged at the time the request was received. No request body can produce a 5xx: whatever it
holds is a 422 naming the field, or a score.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import TypeAdapter, ValidationError

from fraudwatch.config import Settings, get_settings
from fraudwatch.drift import LiveWindow, reference_psi
from fraudwatch.errors import FeatureStateError, StoreError, StoreUnavailable
from fraudwatch.events import EARLIEST, EventBounds, Transaction, schema_errors
from fraudwatch.features import warm_up
from fraudwatch.serving_model import warm_up as warm_up_trees
from fraudwatch.store import open_store
from fraudwatch_api.deps import (
    AppContext,
    Authorized,
    Context,
    CurrentModel,
    ModelNotReady,
    bearer_credentials,
    check_token,
    current_model,
)
from fraudwatch_api.metrics import ApiMetrics
from fraudwatch_api.middleware import RequestMiddleware
from fraudwatch_api.schemas import (
    BatchScoreResponse,
    ErrorResponse,
    HealthResponse,
    ReadyResponse,
    ScoreResponse,
    ValidationErrorResponse,
)
from fraudwatch_api.scoring import Scorer
from fraudwatch_api.serving import ModelHolder, ModelReloader, ServingModel, load_serving_model

__all__ = ["DRIFT_SECONDS", "JSONBytes", "create_app", "update_drift"]

log = logging.getLogger("fraudwatch_api")
DRIFT_SECONDS = 30.0
DRIFT_MIN_ROWS = 200
_BATCH = TypeAdapter(list[Transaction])
_BOOL = TypeAdapter(bool)  # what FastAPI accepts for a bool query parameter (true/false, 1/0, yes/no, on/off)
_EXPLAIN = "Add the feature vector to the answer."
# /score's `explain` query parameter as FastAPI documents a `bool = Query(False)` (that route reads it itself)
_EXPLAIN_PARAM = {
    "name": "explain",
    "in": "query",
    "required": False,
    "description": _EXPLAIN,
    "schema": {"type": "boolean", "default": False, "title": "Explain", "description": _EXPLAIN},
}


class JSONBytes(Response):
    """A JSON response serialised by orjson (numpy scalars allowed)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def _fields(errors: list[dict[str, str]]) -> list[dict[str, str]]:
    out = []
    for e in errors:
        field = e["field"]
        head, _, rest = field.partition(".")
        if head in ("body", "query", "header", "path") and rest:
            field = rest
        elif head == "body":
            field = "(body)"
        out.append({"field": field, "reason": e["reason"]})
    return out


def _error(status: int, detail: str, request: Request, headers: dict[str, str] | None = None) -> JSONBytes:
    rid = request.scope.get("state", {}).get("request_id")
    return JSONBytes({"detail": detail, "request_id": rid}, status_code=status, headers=headers)


def _validation_error(errors: list[dict[str, str]]) -> JSONBytes:
    return JSONBytes({"detail": _fields(errors)}, status_code=422)


def update_drift(ctx: AppContext) -> dict[str, float]:
    """Compute PSI of the live window vs the served model's training reference; set the gauges."""
    model = ctx.holder.current
    window = ctx.scorer.drift
    if model is None or len(window) < DRIFT_MIN_ROWS:
        return {}
    if model.reference is None:
        return {}
    score_psi, out = reference_psi(model.reference, *window.snapshot())
    ctx.metrics.set_psi(score_psi, out)
    if score_psi is not None:
        out = {"score": score_psi, **out}
    return out


async def _drift_loop(ctx: AppContext, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.to_thread(update_drift, ctx)
        except Exception:
            log.exception("drift computation failed")


_TX_REF = {"$ref": "#/components/schemas/Transaction"}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorResponse,
        "description": "Missing or wrong bearer token (when FRAUDWATCH_API_TOKEN is set).",
    },
    413: {"model": ErrorResponse, "description": "Body or batch too large."},
    422: {
        "model": ValidationErrorResponse,
        "description": "Invalid JSON or fields; each bad field is named.",
    },
    503: {"model": ErrorResponse, "description": "Model not loaded or online store unavailable."},
}


def _store_state(store: Any, reachable: bool) -> str:
    """How /readyz describes the store: a SQLite file the stream has not written yet is a valid, empty store."""
    if not reachable:
        return "unreachable"
    if not getattr(store, "exists", True):
        return "reachable, empty (no state written yet: every card and terminal is new)"
    return "reachable"


def create_app(
    settings: Settings | None = None,
    *,
    drift_seconds: float = DRIFT_SECONDS,
    loader: Any = load_serving_model,
) -> FastAPI:
    """Build the scorer API. The model and the store are opened by the lifespan (once per process)."""
    settings = settings or get_settings()
    metrics = ApiMetrics()
    bounds = EventBounds.from_settings(settings, EARLIEST)  # judged at each request's receive time

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = open_store(settings, observer=metrics.observe_store, readonly=True)
        holder = ModelHolder()
        drift = LiveWindow()
        # A new model has a new reference: the window restarts so PSI compares like with like.
        reloader = ModelReloader(settings, holder, metrics, loader=loader, on_swap=lambda _m: drift.clear())
        ctx = AppContext(settings, metrics, holder, reloader, store, Scorer(store, metrics, drift))
        app.state.ctx = ctx
        # the feature kernels and the tree kernel load from numba's on-disk cache here, not in the first request
        await asyncio.to_thread(warm_up)
        await asyncio.to_thread(warm_up_trees)
        await asyncio.to_thread(reloader.load_initial)
        # Everything loaded so far (libraries, the model) lives for the whole process: move it out of the
        # collector's generations so that full collections stay short (a pause lands in some request's latency).
        gc.collect()
        gc.freeze()
        tasks = [
            asyncio.create_task(reloader.run(), name="model-poller"),
            asyncio.create_task(_drift_loop(ctx, drift_seconds), name="drift"),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            store.close()

    app = FastAPI(
        title="fraudwatch scorer API",
        version="0.1.0",
        description=(
            "Scores card transactions with the production MLflow model and the shared feature code, "
            "reading card and terminal state from the online store."
        ),
        lifespan=lifespan,
        default_response_class=JSONBytes,
        # FastAPI's native OpenTelemetry hooks: nothing here configures a provider, yet with them on every
        # request asks the global providers whether one exists (~2-3% of a worker's CPU under load).
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.add_middleware(RequestMiddleware, metrics=metrics, max_body_bytes=settings.api_max_body_bytes)
    app.state.metrics = metrics
    app.state.settings = settings

    @app.exception_handler(RequestValidationError)
    async def _on_validation(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {
                "field": ".".join(str(p) for p in e.get("loc", ())) or "(body)",
                "reason": str(e.get("msg", "invalid")),
            }
            for e in exc.errors()
        ]
        return _validation_error(errors)

    @app.exception_handler(StoreUnavailable)
    async def _on_store_down(request: Request, exc: StoreUnavailable) -> Response:
        return _error(503, f"online store unavailable: {exc}", request, {"Retry-After": "1"})

    @app.exception_handler(StoreError)
    async def _on_store_error(request: Request, exc: StoreError) -> Response:
        return _error(503, f"online store error: {exc}", request, {"Retry-After": "1"})

    @app.exception_handler(ModelNotReady)
    async def _on_no_model(request: Request, exc: ModelNotReady) -> Response:
        return _error(503, f"model not loaded: {exc}", request, {"Retry-After": "5"})

    @app.exception_handler(FeatureStateError)
    async def _on_bad_state(request: Request, exc: FeatureStateError) -> Response:
        return _error(500, f"entity state in the online store cannot be decoded: {exc}", request)

    @app.post(
        "/score",
        response_model=ScoreResponse,
        responses=_ERRORS,
        summary="Score one transaction",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _TX_REF}},
            },
            "parameters": [_EXPLAIN_PARAM],
            "security": [{"HTTPBearer": []}],
        },
    )
    async def score(request: Request) -> Response:
        # No FastAPI dependencies here (the hot path): resolving them per request was ~10% of a worker's CPU
        # (docs/benchmarks.md, Scorer API). Same checks, same order and same answers as the Depends of
        # /score/batch: model (503), bearer token (401), the `explain` flag (422); documented by openapi_extra.
        ctx: AppContext = request.app.state.ctx
        model = current_model(ctx)
        check_token(ctx.settings, bearer_credentials(request.headers.get("authorization")))
        flag = request.query_params.get("explain")
        explain = False
        if flag is not None:
            try:
                explain = _BOOL.validate_python(flag)
            except ValidationError as exc:
                return _validation_error(
                    [{"field": "query.explain", "reason": str(e["msg"])} for e in exc.errors()]
                )
        received = datetime.now(UTC)
        try:
            tx = Transaction.model_validate_json(await request.body(), context=bounds.at(received).context())
        except ValidationError as exc:
            return _validation_error(schema_errors(exc))
        # Inline on the event loop: the work is < 1 ms of CPU and a hop to a thread costs more than it saves.
        result = ctx.scorer.score(model, [tx], explain=explain, shadow=ctx.holder.shadow)[0]
        request.state.decision = result["decision"]
        return JSONBytes(result)

    @app.post(
        "/score/batch",
        response_model=BatchScoreResponse,
        responses=_ERRORS,
        summary=f"Score up to {settings.api_max_batch} transactions in one call",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"type": "array", "items": _TX_REF, "maxItems": settings.api_max_batch}
                    }
                },
            }
        },
    )
    async def score_batch(
        request: Request,
        ctx: Context,
        model: CurrentModel,
        _auth: Authorized,
        explain: Annotated[bool, Query(description="Add each feature vector to the answer.")] = False,
    ) -> Response:
        received = datetime.now(UTC)
        body = await request.body()
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _validation_error([{"field": "(body)", "reason": f"Invalid JSON: {exc}"}])
        if not isinstance(data, list):
            return _validation_error([{"field": "(body)", "reason": "expected a JSON array of transactions"}])
        if len(data) > settings.api_max_batch:
            return _error(
                413,
                f"batch of {len(data)} transactions exceeds the limit of {settings.api_max_batch} "
                "(FRAUDWATCH_API_MAX_BATCH); split it",
                request,
            )
        try:
            transactions = _BATCH.validate_json(body, context=bounds.at(received).context())
        except ValidationError as exc:
            return _validation_error(schema_errors(exc))
        if not transactions:
            return JSONBytes({"results": [], "model": model.info})
        results = await asyncio.to_thread(ctx.scorer.score, model, transactions, explain, ctx.holder.shadow)
        return JSONBytes({"results": results, "model": model.info})

    @app.get("/healthz", response_model=HealthResponse, summary="Liveness: the process answers")
    async def healthz() -> Response:
        return JSONBytes({"status": "ok"})

    @app.get(
        "/readyz",
        response_model=ReadyResponse,
        responses={503: {"model": ReadyResponse, "description": "Model or store missing."}},
        summary="Readiness: model loaded and online store reachable",
    )
    async def readyz(ctx: Context) -> Response:
        model: ServingModel | None = ctx.holder.current
        store_ok = await asyncio.to_thread(ctx.store.ping)
        missing = [name for name, ok in (("model", model is not None), ("store", store_ok)) if not ok]
        body = {
            "status": "not ready" if missing else "ready",
            "model": model.info if model else None,
            "store": f"{ctx.store.backend}: {_store_state(ctx.store, store_ok)}",
            "missing": missing,
        }
        if model is None and ctx.holder.last_error:
            body["model_error"] = ctx.holder.last_error
        return JSONBytes(body, status_code=503 if missing else 200)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            tx_schema = Transaction.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in tx_schema.pop("$defs", {}).items():
                components.setdefault(name, sub)
            components["Transaction"] = tx_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
