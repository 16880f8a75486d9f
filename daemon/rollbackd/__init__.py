"""rollbackd: alerts in, verified rollbacks of data and code out."""

__version__ = "0.1.0"
