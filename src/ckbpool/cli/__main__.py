"""``python -m ckbpool.cli``: the ``ckbpool`` command with this interpreter (how targets start pool processes)."""

from .app import main

main()
