"""Typed dependencies of the route handlers (``Annotated[..., Depends()]`` aliases).

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in the thread pool, a thread hop
per dependency per request, which costs more than everything these functions do.
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


async def get_model(ctx: Context) -> ServingModel:
    # Grab the current bundle once: the whole request uses this one even if a reload swaps it meanwhile.
    model = ctx.holder.current
    if model is None:
        raise ModelNotReady(ctx.holder.last_error or "model not loaded yet")
    return model


CurrentModel = Annotated[ServingModel, Depends(get_model)]

_bearer = HTTPBearer(auto_error=False, description="FRAUDWATCH_API_TOKEN, when the server sets one.")


async def require_token(
    ctx: Context, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    token = ctx.settings.api_token
    if token is None:
        return
    supplied = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(supplied.encode(), token.get_secret_value().encode()):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


Authorized = Annotated[None, Depends(require_token)]
