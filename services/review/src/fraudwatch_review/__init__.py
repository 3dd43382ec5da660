"""fraudwatch review queue: analysts work the alerts on ``fraud.alerts``; each decision becomes a ``Label``.

The service reads alerts into its own SQLite table (:mod:`.queue`), serves a server-rendered page and a JSON
API over it (:mod:`.app`) and publishes every decision to the ``labels`` topic (:mod:`.kafka`) before it
marks the alert decided, so a decision is never lost.
"""
