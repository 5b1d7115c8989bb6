"""Per-shard stage code: what one job of a stage does to one shard."""
