"""The Dataflow Flex Template entry point: ``python -m winnow.cli.flex_template --command=refresh|run …``.

The launcher only submits the job (``--submit-only``); the scheduler finishes each run with
``winnow refresh --finalize-only`` (or ``winnow run --finalize-only``) once the job is done, as the
Airflow DAG in ``deploy/airflow`` does.
"""

from __future__ import annotations

import sys

from winnow.cli.main import app


def main(argv: list[str] | None = None) -> None:
    """``--command=refresh|run --config=gs://… [--state=…] [--output=…]`` plus Beam options."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = next((a.split("=", 1)[1] for a in args if a.startswith("--command=")), "refresh")
    if command not in ("refresh", "run"):
        raise SystemExit(f"--command must be refresh or run, not {command!r}")
    rest = [a for a in args if not a.startswith("--command=")]
    app([command, "--submit-only", "--quiet", *rest])


if __name__ == "__main__":
    main()
