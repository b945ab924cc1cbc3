"""Readers and writers (no Qt): lazy video, flow files, feature tables, images."""
