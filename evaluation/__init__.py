"""Evaluation of model bundles on real bitstreams (no torch needed)."""
