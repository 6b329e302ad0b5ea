"""The score stage: model scorers that write per-document columns."""
