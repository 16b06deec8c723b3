"""Generated protobuf code of the bus events (``scripts/gen-proto.sh``; schema in proto/ckbpool/bus/v1/events.proto).

Only ``ckbpool.bus.events`` should import this: the rest of the pool works with the dataclasses there.
"""
