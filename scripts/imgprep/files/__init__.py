"""File formats the stages read and write: the workflow's TSV tables, TFRecord framing, tars.

Nothing here knows a stage, a record schema or a source type; everything above imports it.
"""
