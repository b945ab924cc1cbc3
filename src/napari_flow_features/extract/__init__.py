"""Feature extraction: flow windows → encoder → post-encoder → per-frame rows. Pure, no Qt."""
