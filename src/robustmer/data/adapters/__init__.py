"""Dataset adapters: a user's copy, in its distributed layout, to the pipeline's formats."""
