"""Search: space files compiled for Optuna, and the Ray Tune run (OptunaSearch + ASHA)."""
