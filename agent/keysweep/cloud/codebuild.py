"""CodeBuild: every project's plain-text environment variables and inline buildspec (``PARAMETER_STORE`` and
``SECRETS_MANAGER`` variables are references and hold no value)."""

from __future__ import annotations

from collections.abc import Iterator

from keysweep.cloud.items import Item, Reader, Resource, variables_item
from keysweep.cloud.session import Target, paginate

_BATCH = 100  # BatchGetProjects takes at most 100 names


def projects(target: Target) -> Iterator[Item]:
    client = target.client("codebuild")
    names = list(paginate(client, "list_projects", "projects"))
    for i in range(0, len(names), _BATCH):
        for project in client.batch_get_projects(names=names[i : i + _BATCH]).get("projects") or ():
            resource = Resource("codebuild", project["arn"], target.region, target.account, project.get("serviceRole"))
            env = (project.get("environment") or {}).get("environmentVariables") or ()
            pairs = [(v["name"], v["value"]) for v in env if v.get("type", "PLAINTEXT") == "PLAINTEXT" and "value" in v]
            item = variables_item(resource, pairs)
            if item is not None:
                yield item
            buildspec = (project.get("source") or {}).get("buildspec")
            if buildspec:
                yield Item(resource, "source/buildspec", buildspec.encode("utf-8", "surrogateescape"))


READERS = (Reader("codebuild", "project environment variables and buildspecs", projects),)
