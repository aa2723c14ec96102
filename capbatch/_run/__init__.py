"""One run: options, the engine, the batch scheduler, the per-task state machine,
limits, money, the journal, the tally."""
