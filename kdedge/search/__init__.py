"""Student search: which candidate student to ship for a target. probe.py times untrained
candidates at their real shapes (latency does not depend on the weights); selection.py is the
rule that picks the winner from validation scores and latencies."""
