"""Evaluation metrics and matplotlib visualizations of features (no Qt)."""
