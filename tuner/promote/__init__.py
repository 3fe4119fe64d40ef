"""Promotion: a search's best configurations cross-validated by patient and reseeded, one
final model chosen, its threshold and calibration fixed on out-of-fold predictions, and the
test split looked at once (see :mod:`tuner.promote.runner`)."""
