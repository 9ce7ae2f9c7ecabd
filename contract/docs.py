"""Writes the /docs page and the Swagger UI assets it loads into one folder, for the edge.

    python -m contract.docs generated/docs

The assets come from the swagger-ui-bundle-v2 package (Swagger UI 5, which reads
OpenAPI 3.1); Envoy serves each file as a direct response (envoy_bootstrap/render.py).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import swagger_ui_bundle

HERE = Path(__file__).resolve().parent
# The files the page loads, besides itself (index.html).
ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png")


def write(out: Path) -> None:
    """`out`/index.html and the assets it names."""
    source = Path(swagger_ui_bundle.swagger_ui_path)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HERE / "docs.html", out / "index.html")
    for name in ASSETS:
        shutil.copyfile(source / name, out / name)


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m contract.docs OUT_DIR\n")
        return 2
    write(Path(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
