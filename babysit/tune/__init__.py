"""Tuning: the learning-rate range test (and, later, hyper-parameter search and ensembles)."""
