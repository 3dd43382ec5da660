"""fraudwatch scorer API: FastAPI ``POST /score`` with the production MLflow model and the shared features.

``create_app(settings)`` builds the app (tests use it directly); ``python -m fraudwatch_api`` serves it.
"""

from fraudwatch_api.app import create_app

__all__ = ["create_app"]
