"""Hyper-parameter search (`robustmer tune`, docs/tuning.md): search spaces from params.yaml
(`space.py`, light) and Optuna studies whose trials train on every fold and are scored on the
validation speakers only (`study.py`)."""
