"""Build the C extensions (Eaglesong; the Noise transport's ChaCha20-Poly1305 on OpenSSL's libcrypto; the IPC
bus's share codec) with the package's own build (no prebuilt download).

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
        ),
        # links the libcrypto Python's own ssl module uses (Debian: libssl3 at run time, libssl-dev to build)
        Extension(
            "ckbpool.sv2._chacha",
            sources=["src/ckbpool/sv2/_chacha.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2", "-std=c11"],
        ),
        # the IPC bus's SHARES codec (stratum workers -> parent); CPython's C API only
        Extension(
            "ckbpool.bus._sharecodec",
            sources=["src/ckbpool/bus/_sharecodec.c"],
            extra_compile_args=["-O2", "-std=c11"],
        ),
    ]
)
