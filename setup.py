"""The C extension's build is defined once, in src/ckbpool/image/setup.py (shipped in the wheel, so the pool image
compiles it the same way): run it."""

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parent / "src" / "ckbpool" / "image" / "setup.py"), run_name="__main__")
