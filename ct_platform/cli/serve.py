"""`ct serve [--port P] [--host H] [--bundle DIR]`: serve a model bundle over HTTP.

Without `--bundle` it serves the bundle of the version MLflow calls champion *now*: the
bundle under `$CT_HOME/bundles` when it is that version's, else it exports that version
first (a CI run may have promoted a newer champion since the last export). It refuses,
naming both versions, when the registry has no champion any more (alias removed, version
deleted) or the champion cannot be exported: a stale bundle is never served by default.
Host, port, body limit and the names of the secret-holding env vars come from the spec.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ct_platform.settings import Spec


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
    from ct_platform.cli.where import load_platform
    from ct_platform.serving.__main__ import BindError, run_server
    from ct_platform.serving.bundle import BundleError
    from ct_platform.serving.config import ServerConfig

    try:
        spec = load_platform().spec  # the running platform's spec, refused when invalid
        bundle = args.bundle or champion_bundle(spec)
    except (ValueError, LookupError) as exc:  # SpecError, OtherPlatformError; no champion
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
        out_of_contract=serving.out_of_contract,
        unknown_columns=serving.unknown_columns,
        body_time_limit_s=serving.body_time_limit_s,
        max_connections=serving.max_connections,
        home=spec.paths.home,
    )
    try:
        # The address is printed once the server accepts requests, never before a bind fails.
        run_server(config, lambda: print(f"ct serve: {bundle} on {config.url}", file=sys.stderr))
    except BindError as exc:
        print(f"ct serve: {exc}", file=sys.stderr)
        return 1
    except BundleError as exc:
        print(f"ct serve: cannot load bundle {bundle}: {exc}", file=sys.stderr)
        return 1
    return 0


def champion_bundle(spec: Spec) -> Path:
    """The bundle of MLflow's current champion, exported first when it is not there yet.

    Raises:
        LookupError: MLflow has no champion (the message names the version the stale
            pointer still names, if any), or its bundle cannot be exported.
    """
    from ct_platform.deployment.endpoint import DeploymentError
    from ct_platform.deployment.export import default_registry, export_champion_bundle
    from ct_platform.deployment.state import read_json
    from ct_platform.registry.versions import CHAMPION

    registry = default_registry(spec)
    try:
        champion = registry.alias_version(CHAMPION)
    except Exception as exc:  # MlflowException, or the store's own error (sqlite, http)
        raise LookupError(
            f"cannot ask MLflow which version is the champion: {exc} "
            "(pass --bundle to serve one explicitly)"
        ) from None
    pointer = read_json(spec.paths.bundles / f"{CHAMPION}.json") or {}
    pointed = pointer.get("version")
    if champion is None:
        stale = f"; the local champion bundle (version {pointed}) is stale" if pointed else ""
        raise LookupError(
            f"MLflow has no version of model '{registry.model_name}' with alias "
            f"'{CHAMPION}'{stale}: not serving it (pass --bundle to serve one explicitly)"
        )
    if pointed is not None and pointed != str(champion.version):
        print(
            f"ct serve: the local champion bundle is version {pointed}, MLflow's champion is "
            f"version {champion.version}: exporting version {champion.version}",
            file=sys.stderr,
        )
    try:
        # Reuses the bundle when it is already the champion's (same version and fingerprint).
        return export_champion_bundle(spec, registry)
    except DeploymentError as exc:
        stale = f" (the local bundle, version {pointed}, is stale)" if pointed else ""
        raise LookupError(
            f"cannot export the bundle of MLflow's champion, version {champion.version}"
            f"{stale}: {exc}"
        ) from None
