"""The speaking default avatar: a synthetic talking-head corpus."""
