"""Deployment toolkit: the typed config (``ckbpool.yaml``), secrets, the jinja2 renderer and the targets.

``init`` -> :mod:`.config` + :mod:`.secrets`; ``validate`` -> :mod:`.validate`; ``render`` -> :mod:`.render`;
``deploy``/``status``/``logs``/``destroy`` -> :mod:`.local` and :mod:`.compose`.
"""
