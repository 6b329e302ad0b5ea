"""The select stage: rules that keep, drop or tag documents by their score columns."""
