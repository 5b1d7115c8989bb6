"""Per-shard stage code: each stage reads its inputs, asks the registries and kernels,
and writes its outputs atomically."""
