"""Evaluation conditions and training-time corruption: missing modalities and noise."""
