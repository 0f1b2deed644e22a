"""Backbones for face embeddings."""
