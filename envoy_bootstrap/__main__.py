"""`python -m envoy_bootstrap`: write Envoy's bootstrap as the environment says; print its path."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from envoy_bootstrap.render import RenderError, Settings, write


def main(env: Mapping[str, str] | None = None) -> int:
    try:
        settings = Settings.from_env(os.environ if env is None else env)
    except RenderError as err:
        print(f"envoy_bootstrap: {err}", file=sys.stderr)
        return 2
    print(write(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
