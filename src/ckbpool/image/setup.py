"""Build the Eaglesong C extension with the package's own build (no prebuilt download).

One definition for both builds that compile ckbpool: the checkout's (the repository's setup.py runs this file) and
the pool image's (``ckbpool image build`` ships this file in the build context as its setup.py, so the image's
Python compiles the extension exactly as a checkout does). Paths are relative to the project root.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ckbpool.ckb._eaglesong",
            sources=["src/ckbpool/ckb/_eaglesong.c"],
            extra_compile_args=["-O3", "-std=c99"],
        )
    ]
)
