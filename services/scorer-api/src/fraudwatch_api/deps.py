"""Typed dependencies of the route handlers (``Annotated[..., Depends()]`` aliases).

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in the thread pool, a thread hop
per dependency per request, which costs more than everything these functions do. ``POST /score`` uses none
of them: it calls :func:`current_model`, :func:`bearer_credentials` and :func:`check_token` directly, since
FastAPI's per-request dependency resolution was ~10% of a worker's CPU (docs/benchmarks.md, Scorer API); the
other routes keep the dependencies.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fraudwatch.config import Settings
from fraudwatch.store import OnlineStore
from fraudwatch_api.metrics import ApiMetrics
from fraudwatch_api.scoring import Scorer
from fraudwatch_api.serving import ModelHolder, ModelReloader, ServingModel

__all__ = [
    "AppContext",
    "Authorized",
    "Context",
    "CurrentModel",
    "ModelNotReady",
    "bearer_credentials",
    "check_token",
    "current_model",
]


class ModelNotReady(Exception):
    """No model is loaded yet (answered with 503)."""


@dataclass
class AppContext:
    """What the lifespan built; one per app, stored on ``app.state.ctx``."""

    settings: Settings
    metrics: ApiMetrics
    holder: ModelHolder
    reloader: ModelReloader
    store: OnlineStore
    scorer: Scorer


async def get_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


Context = Annotated[AppContext, Depends(get_context)]


def current_model(ctx: AppContext) -> ServingModel:
    """The current bundle, grabbed once: the whole request uses this one even if a reload swaps it meanwhile."""
    model = ctx.holder.current
    if model is None:
        raise ModelNotReady(ctx.holder.last_error or "model not loaded yet")
    return model


async def get_model(ctx: Context) -> ServingModel:
    return current_model(ctx)


CurrentModel = Annotated[ServingModel, Depends(get_model)]

_bearer = HTTPBearer(auto_error=False, description="FRAUDWATCH_API_TOKEN, when the server sets one.")


def check_token(settings: Settings, supplied: str) -> None:
    """401 unless ``supplied`` is the server's token (any value passes when the server sets none)."""
    token = settings.api_token
    if token is None:
        return
    if not hmac.compare_digest(supplied.encode(), token.get_secret_value().encode()):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


def bearer_credentials(authorization: str | None) -> str:
    """The credentials of an ``Authorization: Bearer <credentials>`` header, "" for anything else (what
    ``HTTPBearer(auto_error=False)`` accepts, without a dependency)."""
    if not authorization:
        return ""
    scheme, _, credentials = authorization.partition(" ")
    credentials = credentials.strip()
    if not scheme or not credentials or scheme.lower() != "bearer":
        return ""
    return credentials


async def require_token(
    ctx: Context, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    check_token(ctx.settings, credentials.credentials if credentials is not None else "")


Authorized = Annotated[None, Depends(require_token)]
