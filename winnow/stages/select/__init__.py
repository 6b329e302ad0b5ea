"""The select stage: which documents are kept (threshold, budget cuts, INGENIOUS)."""
