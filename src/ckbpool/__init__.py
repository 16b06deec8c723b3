"""ckbpool: a Stratum V2 mining pool for Nervos CKB and the toolkit that deploys it."""

__version__ = "0.1.0"
