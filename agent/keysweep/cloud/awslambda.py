"""Lambda: the environment variables of every version of every function (``$LATEST`` and each published
version has its own configuration; aliases point at versions), and the deployment packages and layers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from keysweep.cloud import packages
from keysweep.cloud.items import Item, Reader, Resource, variables_item
from keysweep.cloud.session import Target, paginate

# Lambda's own limit for an unzipped function and its layers is 250 MB; a zip cannot be larger
MAX_PACKAGE = 256 * 1024 * 1024


def _versions(target: Target) -> Iterator[dict[str, Any]]:
    client = target.client("lambda")
    for fn in paginate(client, "list_functions", "Functions"):
        yield from paginate(client, "list_versions_by_function", "Versions", FunctionName=fn["FunctionName"])


def _resource(target: Target, config: dict[str, Any]) -> Resource:
    return Resource("lambda", config["FunctionArn"], target.region, target.account, config.get("Role"))


def configurations(target: Target) -> Iterator[Item]:
    for config in _versions(target):
        variables = (config.get("Environment") or {}).get("Variables") or {}
        item = variables_item(_resource(target, config), sorted(variables.items()))
        if item is not None:
            yield item


def _package(target: Target, resource: Resource, field: str, url: str | None) -> Item | None:
    try:
        fh, size = packages.fetch(url, max_bytes=MAX_PACKAGE)
    except packages.PackageError as exc:
        target.skip("lambda", f"{exc.reason} ({field})")
        return None
    return Item(resource, field, archive=fh, size=size)


def code(target: Target) -> Iterator[Item]:
    """Each distinct package of each function once (versions sharing a CodeSha256 share the package), and each
    layer version the functions use once."""
    client = target.client("lambda")
    layers: dict[str, Resource] = {}
    seen: set[tuple[str, str]] = set()
    for config in _versions(target):
        for layer in config.get("Layers") or ():
            layers.setdefault(layer["Arn"], Resource("lambda", layer["Arn"], target.region, target.account))
        if config.get("PackageType") == "Image":
            target.skip("lambda", "container-image-package (not read)")
            continue
        name = config["FunctionArn"].rsplit(":", 1)[0] if config.get("Version") else config["FunctionArn"]
        if (name, config.get("CodeSha256", "")) in seen:
            continue
        seen.add((name, config.get("CodeSha256", "")))
        got = target.attempt(
            "lambda",
            client.get_function,
            FunctionName=config["FunctionName"],
            Qualifier=config.get("Version", "$LATEST"),
        )
        if got is None:
            continue
        item = _package(target, _resource(target, config), "Code", (got.get("Code") or {}).get("Location"))
        if item is not None:
            yield item
    for arn, resource in layers.items():
        layer_arn, _, version = arn.rpartition(":")
        got = target.attempt("lambda", client.get_layer_version, LayerName=layer_arn, VersionNumber=int(version))
        if got is None:
            continue
        item = _package(target, resource, "Content", (got.get("Content") or {}).get("Location"))
        if item is not None:
            yield item


READERS = (
    Reader("lambda", "function environment variables (every version)", configurations),
    Reader("lambda", "function packages and layers", code),
)
