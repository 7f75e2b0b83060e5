"""`python -m ct_platform.deployment admin-token`: print the admin token the platform uses.

That is `serving.admin_token_env` when set, else the shared `$CT_HOME/deployments/admin-token`
(created once, 0600). A server that the `endpoint` target drives starts with it (compose's
model-server: `CT_ADMIN_TOKEN=$(python -m ct_platform.deployment admin-token) ct serve`).
"""

from __future__ import annotations

import sys

from ct_platform.deployment.state import admin_token
from ct_platform.settings import load_spec


def main(argv: list[str]) -> int:
    if argv != ["admin-token"]:
        print("usage: python -m ct_platform.deployment admin-token", file=sys.stderr)
        return 2
    spec = load_spec()
    print(admin_token(spec.paths.deployments, spec.serving.admin_token_env))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
