"""Fuzz targets for the SV2 library, the pool's session layer and the ckb template parser.

``targets.py`` holds plain ``(bytes) -> None`` functions with no atheris dependency: ``benchmarks/fuzz.py`` runs
them under atheris (``make fuzz``), ``tests/unit/test_fuzz_targets.py`` runs them on a few hundred inputs in the
normal suite.
"""
