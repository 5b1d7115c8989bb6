"""Figures of what the workflow built: contact sheets of records (sheets)."""
