"""Pure compute on pixels and numbers: decode, colour, geometry, resample, encode, string art, Lab.

Nothing here reads a config, a table or a shard, or knows a stage, record format or source
type: the stages call these with values.
"""
