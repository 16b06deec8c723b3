"""Build the Eaglesong C extension with the package's own build (no prebuilt download)."""

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
