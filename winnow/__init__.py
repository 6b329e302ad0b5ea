"""winnow: pretraining-data curation on Apache Beam."""

__version__ = "0.1.0"
