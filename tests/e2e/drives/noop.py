"""Runs inside GIMP: nothing but the registration check (used to warm a profile)."""
from drive_lib import *  # noqa: F403


@case
def registered():
    return {"upscale": proc_info("python-fu-ai-enhance-upscale") is not None,
            "faces": proc_info("python-fu-ai-enhance-faces") is not None}


finish()
