"""Beam-free shared pieces: hashing, statistics, budgets, model paths, embedders, tokenizer, schemas."""
