"""Great Expectations, imported with analytics off and its INFO chatter muted.

Only the validate stage imports this module (GX costs seconds and ~200 MB to import), so the rest
of the package never pays for it. Both settings must be in place before the first GX import: the
analytics switch is read then, and GX logs API registration at INFO while importing (the CLI logs
at INFO, so these records would flood the stage's output).
"""

from __future__ import annotations

import logging
import os

os.environ["GX_ANALYTICS_ENABLED"] = "false"
logging.getLogger("great_expectations").setLevel(logging.WARNING)

import great_expectations as gx  # noqa: E402
import great_expectations.expectations as gxe  # noqa: E402

__all__ = ["gx", "gxe"]
