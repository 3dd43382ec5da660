"""The review queue app: a server-rendered page for analysts and a JSON API over the same table.

Routes:

- ``GET /login``, ``POST /login`` (form: analyst, token), ``POST /logout``: the session cookie (:mod:`.auth`).
- ``GET /queue?decision=&hours=``: open alerts, newest first, and the latest decisions (who decided what).
- ``POST /queue/decide`` (form: transaction_id, outcome, note): one click from the page; answers 303 back.
- ``GET /api/alerts``, ``GET /api/decided``, ``POST /api/decisions`` (JSON): the same, for scripts; bearer
  token or the session cookie.
- ``/healthz``, ``/readyz`` (the alert consumer is connected), ``/metrics``.

A decision publishes the label and waits for the broker's ack BEFORE the alert is marked decided: when Kafka
refuses it, the answer is 503 and the alert stays open, so no decision is lost. A second decision on the
same alert is 409. Every input is validated (422 naming the field); every value on the page is escaped by
Jinja's autoescape (ids and countries are user-controlled strings).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from fraudwatch.config import Settings, get_settings
from fraudwatch_review.auth import (
    ANALYST_PATTERN,
    COOKIE,
    bearer_ok,
    session_analyst,
    session_cookie,
    token_ok,
)
from fraudwatch_review.kafka import AlertConsumer, LabelPublisher, PublishFailed, label_for
from fraudwatch_review.metrics import ReviewMetrics
from fraudwatch_review.queue import Alert, Outcome, ReviewQueue

__all__ = ["DecisionIn", "ReviewContext", "create_app"]

log = logging.getLogger("fraudwatch_review")

#: printable text; a note may span lines (tab, LF, CR allowed), nothing else below U+0020 nor C1
NOTE_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
MAX_FORM_BYTES = 16_384
HOURS_CHOICES = (0, 1, 6, 24, 24 * 7, 24 * 30)


class _Form(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class DecisionIn(_Form):
    """One analyst decision (the page's form or the JSON API)."""

    transaction_id: str = Field(min_length=1, max_length=128, pattern=ID_PATTERN)
    outcome: Outcome
    note: str | None = Field(default=None, max_length=1000, pattern=NOTE_PATTERN)
    analyst: str | None = Field(
        default=None,
        pattern=ANALYST_PATTERN,
        description="Who decided; required with the bearer token, taken from the session otherwise.",
    )

    @field_validator("note", mode="before")
    @classmethod
    def _empty_note(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value


class LoginIn(_Form):
    analyst: str = Field(pattern=ANALYST_PATTERN)
    token: str = Field(default="", max_length=512)


class Conflict(Exception):
    """The alert was decided already (409)."""

    def __init__(self, alert: Alert) -> None:
        super().__init__(f"{alert.transaction_id} was decided already")
        self.alert = alert


class NotFound(Exception):
    """No such alert in the queue (404)."""


class Unauthenticated(Exception):
    """No valid bearer token nor session cookie (401; the page redirects to /login)."""


class FieldErrors(Exception):
    """Invalid input (422), as ``[{"field", "reason"}]``."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['reason']}" for e in errors))
        self.errors = errors


def _field_errors(exc: ValidationError) -> FieldErrors:
    out = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err.get("loc", ())) or "(body)"
        reason = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "string_pattern_mismatch":
            reason = "contains characters that are not allowed here"
        out.append({"field": field, "reason": reason})
    return FieldErrors(out)


@dataclass
class ReviewContext:
    """What the lifespan built; one per app, on ``app.state.ctx``."""

    settings: Settings
    queue: ReviewQueue
    metrics: ReviewMetrics
    consumer: AlertConsumer
    publisher: LabelPublisher
    decide_lock: asyncio.Lock

    async def decide(self, decision: DecisionIn, analyst: str) -> Alert:
        """Publish the label, then mark the alert decided (both or neither, as far as the analyst sees)."""
        async with self.decide_lock:  # one decision at a time: a double click publishes one label
            alert = self.queue.get(decision.transaction_id)
            if alert is None:
                raise NotFound(decision.transaction_id)
            if alert.status != "open":
                raise Conflict(alert)
            label = label_for(
                alert.transaction_id,
                alert.card_id,
                alert.terminal_id,
                alert.event_time,
                decision.outcome == "fraud",
                analyst,
            )
            try:
                await self.publisher.publish(label)
            except PublishFailed:
                self.metrics.label_publish_failures.inc()
                raise
            now = datetime.now(UTC)
            self.queue.decide(alert.transaction_id, decision.outcome, analyst, decision.note, now)
        self.metrics.decisions.labels(outcome=decision.outcome, model_version=alert.model_version).inc()
        self.metrics.decision_delay.labels(outcome=decision.outcome).observe(
            max(0.0, (now - alert.scored_at).total_seconds())
        )
        log.info(
            "decided",
            extra={
                "fields": {
                    "transaction_id": alert.transaction_id,
                    "outcome": decision.outcome,
                    "analyst": analyst,
                    "model_version": alert.model_version,
                }
            },
        )
        decided = self.queue.get(alert.transaction_id)
        assert decided is not None
        return decided


async def _ctx(request: Request) -> ReviewContext:
    ctx: ReviewContext = request.app.state.ctx
    return ctx


Context = Annotated[ReviewContext, Depends(_ctx)]


async def _api_principal(request: Request, ctx: Context) -> str | None:
    """API access: the bearer token (analyst named in the body) or a session (its analyst)."""
    analyst = session_analyst(ctx.settings, request.cookies.get(COOKIE))
    if analyst is not None:
        return analyst
    if "authorization" in request.headers and bearer_ok(ctx.settings, request.headers["authorization"]):
        return None
    if ctx.settings.api_token is None:
        return None
    raise Unauthenticated()


ApiPrincipal = Annotated[str | None, Depends(_api_principal)]


async def _read_form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise FieldErrors([{"field": "(body)", "reason": f"larger than {MAX_FORM_BYTES} bytes"}])
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise FieldErrors([{"field": "(body)", "reason": "not UTF-8"}]) from None
    return dict(pairs)


def _window(hours: int) -> datetime | None:
    return datetime.now(UTC) - timedelta(hours=hours) if hours > 0 else None


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def create_app(
    settings: Settings | None = None, publisher: LabelPublisher | None = None, consume: bool = True
) -> FastAPI:
    """The app; ``settings`` default to the environment's (FRAUDWATCH_*).

    ``publisher`` replaces the Kafka label publisher and ``consume=False`` leaves fraud.alerts unread: the
    unit tests run without a broker that way (the integration and browser tests use the real one).
    """
    settings = settings or get_settings()
    templates = Environment(
        loader=PackageLoader("fraudwatch_review", "templates"),
        autoescape=select_autoescape(["html"], default=True),
    )

    def render(name: str, status: int = 200, **values: Any) -> HTMLResponse:
        return HTMLResponse(templates.get_template(name).render(**values), status_code=status)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        queue = ReviewQueue(settings.resolved_review_db_path)
        metrics = ReviewMetrics(queue)
        consumer = AlertConsumer(settings, queue, metrics)
        labels = publisher or LabelPublisher(settings)
        app.state.ctx = ReviewContext(settings, queue, metrics, consumer, labels, asyncio.Lock())
        await labels.start()
        if consume:
            await consumer.start()
        log.info(
            "review queue up", extra={"fields": {"db": str(queue.path), "alerts": settings.topic_alerts}}
        )
        try:
            yield
        finally:
            await consumer.stop()
            await labels.stop()
            queue.close()

    app = FastAPI(
        title="fraudwatch review queue",
        description="Analysts decide fraud.alerts; each decision is a label on the labels topic.",
        lifespan=lifespan,
    )

    # ------------------------------------------------------------------------------------ errors
    def _wants_html(request: Request) -> bool:
        return not request.url.path.startswith("/api/") and request.url.path not in ("/metrics",)

    @app.exception_handler(RequestValidationError)
    async def _on_validation(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"field": str(e.get("loc", ("",))[-1]), "reason": str(e.get("msg", "invalid"))}
            for e in exc.errors()
        ]
        return await _on_field_errors(request, FieldErrors(errors))

    @app.exception_handler(FieldErrors)
    async def _on_field_errors(request: Request, exc: FieldErrors) -> Response:
        if _wants_html(request):
            return render("error.html", 422, title="Invalid input", errors=exc.errors)
        return JSONResponse({"detail": exc.errors}, status_code=422)

    @app.exception_handler(Unauthenticated)
    async def _on_unauthenticated(request: Request, exc: Unauthenticated) -> Response:
        if _wants_html(request):
            return RedirectResponse("/login", status_code=303)
        return JSONResponse(
            {"detail": "missing or invalid bearer token"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    @app.exception_handler(Conflict)
    async def _on_conflict(request: Request, exc: Conflict) -> Response:
        alert = exc.alert
        message = f"{alert.transaction_id} was already decided {alert.status} by {alert.decided_by}"
        if _wants_html(request):
            return render("error.html", 409, title="Already decided", message=message)
        return JSONResponse({"detail": message, "alert": _alert_json(alert)}, status_code=409)

    @app.exception_handler(NotFound)
    async def _on_not_found(request: Request, exc: NotFound) -> Response:
        message = f"no alert {exc} in the queue"
        if _wants_html(request):
            return render("error.html", 404, title="Unknown alert", message=message)
        return JSONResponse({"detail": message}, status_code=404)

    @app.exception_handler(PublishFailed)
    async def _on_publish_failed(request: Request, exc: PublishFailed) -> Response:
        message = f"{exc}; the alert stays open, try again"
        if _wants_html(request):
            return render("error.html", 503, title="Kafka unavailable", message=message)
        return JSONResponse({"detail": message}, status_code=503)

    # ------------------------------------------------------------------------------------ session
    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return RedirectResponse("/queue", status_code=303)

    @app.get("/login", response_class=HTMLResponse)
    async def login_page(ctx: Context) -> Response:
        return render("login.html", title="Log in", token_needed=ctx.settings.api_token is not None)

    @app.post("/login")
    async def login(request: Request, ctx: Context) -> Response:
        try:
            form = LoginIn.model_validate(await _read_form(request))
        except ValidationError as exc:
            raise _field_errors(exc) from None
        if not token_ok(ctx.settings, form.token):
            return render("login.html", 401, title="Log in", token_needed=True, error="wrong token")
        response = RedirectResponse("/queue", status_code=303)
        response.set_cookie(
            COOKIE,
            session_cookie(ctx.settings, form.analyst),
            httponly=True,
            samesite="strict",
            secure=ctx.settings.environment == "production",
            max_age=12 * 3600,
        )
        return response

    @app.post("/logout")
    async def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    def _analyst(request: Request, ctx: ReviewContext) -> str:
        analyst = session_analyst(ctx.settings, request.cookies.get(COOKIE))
        if analyst is None:
            raise Unauthenticated()
        return analyst

    # ------------------------------------------------------------------------------------ page
    @app.get("/queue", response_class=HTMLResponse)
    async def queue_page(
        request: Request,
        ctx: Context,
        decision: Annotated[Literal["any", "review", "decline"], Query()] = "any",
        hours: Annotated[int, Query(ge=0, le=24 * 365)] = 0,
    ) -> Response:
        analyst = _analyst(request, ctx)
        now = datetime.now(UTC)
        alerts = ctx.queue.open_alerts(None if decision == "any" else decision, _window(hours))
        return render(
            "queue.html",
            title="Review queue",
            analyst=analyst,
            alerts=alerts,
            decided=ctx.queue.decided(20),
            open_count=ctx.queue.count_open(),
            decision=decision,
            hours=hours,
            hours_choices=HOURS_CHOICES,
            now=now,
            age=lambda a: _age(a.age_seconds(now)),
            since=lambda t: _age(max(0.0, (now - t).total_seconds())),
            back=f"/queue?{urlencode({'decision': decision, 'hours': hours})}",
        )

    @app.post("/queue/decide")
    async def decide_form(request: Request, ctx: Context) -> Response:
        analyst = _analyst(request, ctx)
        form = await _read_form(request)
        back = form.pop("back", "/queue")
        if not back.startswith("/queue"):  # only ever back to the page: no open redirect
            back = "/queue"
        try:
            decision = DecisionIn.model_validate(form)
        except ValidationError as exc:
            raise _field_errors(exc) from None
        await ctx.decide(decision, analyst)
        return RedirectResponse(back, status_code=303)

    # ------------------------------------------------------------------------------------ JSON API
    @app.get("/api/alerts")
    async def api_alerts(
        ctx: Context,
        principal: ApiPrincipal,
        decision: Annotated[Literal["review", "decline"] | None, Query()] = None,
        since: Annotated[AwareDatetime | None, Query()] = None,
        until: Annotated[AwareDatetime | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> Response:
        alerts = ctx.queue.open_alerts(decision, since, until, limit)
        return JSONResponse({"alerts": [_alert_json(a) for a in alerts], "open": ctx.queue.count_open()})

    @app.get("/api/decided")
    async def api_decided(
        ctx: Context, principal: ApiPrincipal, limit: Annotated[int, Query(ge=1, le=1000)] = 50
    ) -> Response:
        return JSONResponse({"decided": [_alert_json(a) for a in ctx.queue.decided(limit)]})

    @app.post("/api/decisions")
    async def api_decide(request: Request, ctx: Context, principal: ApiPrincipal) -> Response:
        try:
            decision = DecisionIn.model_validate_json(await request.body())
        except ValidationError as exc:
            raise _field_errors(exc) from None
        analyst = principal or decision.analyst
        if analyst is None:
            raise FieldErrors([{"field": "analyst", "reason": "required with the bearer token"}])
        alert = await ctx.decide(decision, analyst)
        return JSONResponse(_alert_json(alert))

    # ------------------------------------------------------------------------------------ ops
    @app.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz(ctx: Context) -> Response:
        ready = ctx.consumer.started.is_set()
        return JSONResponse(
            {"status": "ready" if ready else "starting", "open": ctx.queue.count_open()},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics")
    async def metrics(ctx: Context) -> Response:
        return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _alert_json(alert: Alert) -> dict[str, Any]:
    out = alert.as_json()
    for key, value in out.items():
        if isinstance(value, datetime):
            out[key] = value.isoformat().replace("+00:00", "Z")
    return out
