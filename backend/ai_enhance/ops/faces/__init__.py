"""Restore Faces: detection, alignment, restoration, paste-back (``pipeline``) and the soft face
masks and alignment geometry (``masks``)."""
from .pipeline import run

__all__ = ["run"]
