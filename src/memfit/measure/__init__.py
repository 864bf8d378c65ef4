"""Measuring memory: live tensor storages by category, and the process peak."""
