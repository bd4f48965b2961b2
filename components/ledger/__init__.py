"""Ledger updates as pipeline steps: idempotency check, running/done/failed moves, pending batches."""
