"""recshrink: compress large sequential interest models into small, fast recommenders."""

__version__ = "0.1.0"
