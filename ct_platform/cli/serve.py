"""`ct serve [--port P] [--host H] [--bundle DIR]`: serve a model bundle over HTTP.

Without `--bundle` it serves the champion's bundle under `$CT_HOME/bundles` (the
`champion.json` pointer), exporting it from the MLflow champion first when none exists.
Host, port, body limit and the names of the secret-holding env vars come from the spec.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ct_platform.settings import Spec, SpecError, load_spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, help="bundle directory (default: the champion's)")
    parser.add_argument("--host", help="interface to bind (default: spec serving.host)")
    parser.add_argument("--port", type=int, help="port (default: spec serving.port)")
    parser.add_argument("--candidate", type=Path, help="bundle to load into the candidate slot")
    parser.add_argument(
        "--no-onnx",
        action="store_true",
        help="score with the sklearn fallback even when the bundle has an ONNX graph",
    )


def run(args: argparse.Namespace) -> int:
    # Imported here: `ct --help` must not pay for onnxruntime, sklearn or uvicorn.
    from ct_platform.serving.__main__ import run_server
    from ct_platform.serving.config import ServerConfig

    try:
        spec = load_spec()
        bundle = args.bundle or champion_bundle(spec)
    except (SpecError, LookupError) as exc:
        print(f"ct serve: {exc}", file=sys.stderr)
        return 1
    serving = spec.serving
    config = ServerConfig(
        bundle=bundle,
        candidate=args.candidate,
        host=args.host or serving.host,
        port=args.port or serving.port,
        max_body_bytes=serving.max_body_bytes,
        api_key_env=serving.api_key_env,
        admin_token_env=serving.admin_token_env,
        use_onnx=not args.no_onnx,
        home=spec.paths.home,
    )
    print(f"ct serve: {bundle} on http://{config.host}:{config.port}", file=sys.stderr)
    run_server(config)
    return 0


def champion_bundle(spec: Spec) -> Path:
    """The champion's bundle, exported from MLflow first if it has not been yet."""
    from ct_platform.deployment.endpoint import DeploymentError
    from ct_platform.deployment.export import export_champion_bundle, pointed_bundle

    existing = pointed_bundle(spec)
    if existing is not None:
        return existing
    print("ct serve: no champion bundle yet; exporting it from MLflow", file=sys.stderr)
    try:
        return export_champion_bundle(spec)
    except DeploymentError as exc:
        raise LookupError(f"cannot export the champion bundle: {exc}") from None
