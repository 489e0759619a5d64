"""Benchmarks: the chapter's baseline (chapter_baseline) and the measurements against it."""
