"""pipeline-watchdog: tells ML teams when a pipeline has silently stopped succeeding."""

__version__ = "0.1.0"
