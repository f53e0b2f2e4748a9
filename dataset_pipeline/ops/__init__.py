"""Ops for jobs that are not asset materialisations (label edits)."""
