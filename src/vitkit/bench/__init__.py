"""Measurements that train or time models: the ViT ablation sweep (`vitkit ablate`, ablations.py)."""
