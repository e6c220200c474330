#!/usr/bin/env python3
"""Validates deploy/kubernetes as `kubectl apply -k` would send it.

Renders the kustomization (its `resources`, in order), then checks every object:
- Kubernetes' own kinds against the official OpenAPI schemas of a Kubernetes release
  (`kubernetes-validate`, which bundles them; strict: unknown fields fail);
- the Worker Controller's kinds against the `openAPIV3Schema` of their pinned CRDs (`crds/`),
  unknown fields failing too, as the API server prunes and rejects them;
- the templates a `WorkerResourceTemplate` carries, as the kind they declare.
Prints one line per object; exits 1 on the first file with a problem listed.

Usage: validate.py [KUBERNETES_VERSION]   (default 1.33.0; SLIPWAY_KUBERNETES_DIR: other manifests)
"""

import copy
import os
import pathlib
import sys

import jsonschema
import kubernetes_validate
import yaml

HERE = pathlib.Path(__file__).resolve().parent
# The manifests to check (default: beside this file); the CRDs are always this directory's.
MANIFESTS = pathlib.Path(os.environ.get("SLIPWAY_KUBERNETES_DIR", HERE))


def render():
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((MANIFESTS / name).read_text()):
            if doc:
                yield name, doc


def crd_schemas():
    """(group/version, kind) -> JSON schema from each pinned CRD."""
    schemas = {}
    for path in sorted((HERE / "crds").glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd:
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def strict(schema):
    """Structural schemas prune unknown fields; a manifest relying on that is wrong: forbid them
    (except where the CRD preserves unknown fields or gives additionalProperties itself)."""
    if isinstance(schema, dict):
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        for value in schema.values():
            strict(value)
    elif isinstance(schema, list):
        for value in schema:
            strict(value)
    return schema


def check_kubernetes(doc, version):
    try:
        kubernetes_validate.validate(doc, version, strict=True)
        return []
    except kubernetes_validate.ValidationError as e:
        return [f"{'.'.join(str(p) for p in e.path) or '(root)'}: {e.message}"]


def check(doc, version, schemas, where):
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in schemas:
        validator = jsonschema.Draft7Validator(schemas[key])
        problems = [
            f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
            for e in validator.iter_errors(doc)
        ]
        # What the controller renders per version (an HPA): complete it with the fields it
        # injects, then judge it as that kind.
        if doc.get("kind") == "WorkerResourceTemplate":
            template = copy.deepcopy(doc["spec"]["template"])
            template.setdefault("metadata", {"name": "rendered-per-version"})
            spec = template.get("spec", {})
            if spec.get("scaleTargetRef") == {}:
                spec["scaleTargetRef"] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "per-version"}
            problems += [f"spec.template: {p}" for p in check_kubernetes(template, version)]
        return problems
    return check_kubernetes(doc, version)


def main():
    version = sys.argv[1] if len(sys.argv) > 1 else "1.33.0"
    schemas = crd_schemas()
    failed = False
    for name, doc in render():
        where = f"{name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        problems = check(doc, version, schemas, where)
        print(f"{'FAIL' if problems else 'ok  '} {where}")
        for p in problems:
            print(f"       {p}")
        failed |= bool(problems)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
