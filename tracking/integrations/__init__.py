"""Adapters that plug our trackers into the frameworks users train under, each behind an extra:

- `tracking.integrations.lightning.TrackingLogger`, a Lightning logger (extra `lightning`)
- `tracking.integrations.transformers.TrackingCallback`, a `transformers.TrainerCallback` (`transformers`)
- `tracking.integrations.accelerate.AccelerateTracker`, an Accelerate tracker (`accelerate`)

Each uses only the public tracker API and runs on the framework's own threads (its training loop's).
"""
