#!/usr/bin/env python3
"""Install (or --uninstall) gimp-ai-enhance: backend venv with the right PyTorch build, verified
model downloads, the GIMP 3 plug-in in every profile, settings, then `ai-enhance doctor`.

    python3 installer/install.py --yes --demo          # everything, then enhance a sample photo
    python3 installer/install.py --help                # all options
    python3 installer/install.py --uninstall           # remove exactly what it added

Standard library only: this runs before any venv exists.  See docs/install.md."""
import os
import sys

if sys.version_info < (3, 9):
    sys.exit("install.py needs Python 3.9 or newer (the backend itself needs 3.11+): "
             "https://www.python.org/downloads/")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aie_install.main import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
