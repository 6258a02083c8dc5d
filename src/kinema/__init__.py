"""Kinema: a self-hosted generation API behind the hosted Kling contract."""

__version__ = "0.1.0"
