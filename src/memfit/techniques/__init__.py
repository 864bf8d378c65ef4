"""Techniques that make training fit: each file holds one technique's effect and apply."""
