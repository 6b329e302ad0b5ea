"""The review stage: human reviewers' decisions applied as filters, and the sheet they review (1.5-Pints)."""
