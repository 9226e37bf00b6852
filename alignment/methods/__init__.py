"""Alignment methods: one file per method, each registering a `MethodSpec` in `METHODS` at import.

`METHODS` is the single source of method names for the recipe schema (`method.name`), the CLI's `--help`
and the docs. A method file holds its `<Name>Params` dataclass (validated from the recipe's `method:`
section), its registration, and the loss wiring.
"""

from __future__ import annotations

# Importing the method files registers them.
from alignment.methods import (  # noqa: F401
    bco,
    ctrl,
    d2o,
    dpo,
    ipo,
    kto,
    online_dpo,
    online_ipo,
    reward_model,
    rloo,
    selfie,
    urial,
)
from alignment.methods.spec import (  # noqa: F401  (the public names of the package)
    METHODS,
    ON_POLICY_FORMATS,
    DataSource,
    MethodKind,
    MethodSpec,
    register,
)
