"""Step resolution (tracking.recorder.steps): what `step=None` becomes, as every reader of the journal sees it."""
from __future__ import annotations

import random

from tracking.journal.events import METRICS
from tracking.recorder.steps import StepResolver


def test_step_resolution_matches_a_per_key_reference():
    """Random mixes of explicit and missing steps over many key sets (past the resolver's fold
    threshold) give what a plain per-key table gives."""
    rng = random.Random(7)
    keys = [f"k{i}" for i in range(40)]
    resolver, reference = StepResolver(), {}
    for _ in range(20_000):
        values = dict.fromkeys(rng.sample(keys, rng.randint(1, 4)), 1.0)
        step = None if rng.random() < 0.2 else rng.randint(0, 5_000)
        expected = max(reference.get(k, 0) for k in values) if step is None else step
        for key in values:
            reference[key] = max(reference.get(key, 0), expected + 1)
        resolved = resolver.resolve((METRICS, values, step, 0.0))
        assert resolved[2] == expected
