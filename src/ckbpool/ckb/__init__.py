"""CKB chain core: hashing, molecule, targets, Eaglesong, RPC client, template -> block."""
