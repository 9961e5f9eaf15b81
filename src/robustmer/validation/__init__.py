"""The `validate` stage: a Great Expectations gate on the canonical feature store.

`gate.run_gate` is the entry point. `tables` and `report` need no GX; `suite` and `runner` import
it (through `_gx`, which switches analytics off), and only `run_gate` imports those.
"""
