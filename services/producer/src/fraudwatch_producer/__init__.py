"""fraudwatch package."""
