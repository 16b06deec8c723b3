"""CPU test miners: solo (straight to the node's RPC), and SV2 / V1 clients of the pool."""
