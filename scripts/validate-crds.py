#!/usr/bin/env python3
"""Validates Kubernetes manifests against the openAPIV3Schema of the real CRDs.

usage: validate-crds.py CRD_DIR MANIFEST...

CRD_DIR is searched recursively for CustomResourceDefinitions (YAML). Every
document of every MANIFEST whose (group, version, kind) has a CRD there is
validated (JSON Schema Draft 4 semantics as the apiserver's structural
schemas; CEL `x-kubernetes-validations` rules are not evaluated). Core kinds
(v1 Service) are checked for the fields the recipes rely on. Any document of
an unknown kind is an error, so a typo cannot pass silently. Prints one line
per document; exits 1 on the first invalid document set.
"""
import pathlib
import sys

import jsonschema
import yaml


def load_crds(root):
    schemas = {}
    for path in sorted(pathlib.Path(root).rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                schema = version.get("schema", {}).get("openAPIV3Schema")
                if schema:
                    key = (spec["group"], version["name"], spec["names"]["kind"])
                    schemas[key] = schema
    return schemas


def check_service(doc):
    errors = []
    spec = doc.get("spec", {})
    if not isinstance(spec.get("selector"), dict) or not spec["selector"]:
        errors.append("Service without a selector")
    for port in spec.get("ports", []):
        if not isinstance(port.get("port"), int) or not 0 < port["port"] < 65536:
            errors.append(f"bad port {port!r}")
    if not spec.get("ports"):
        errors.append("Service without ports")
    return errors


def main():
    crd_dir, manifests = sys.argv[1], sys.argv[2:]
    schemas = load_crds(crd_dir)
    failed = False
    for manifest in manifests:
        for doc in yaml.safe_load_all(pathlib.Path(manifest).read_text()):
            if not doc:
                continue
            api = doc.get("apiVersion", "")
            group, _, version = api.rpartition("/")
            kind = doc.get("kind")
            name = f"{manifest}: {kind} {doc.get('metadata', {}).get('name')}"
            if api == "v1" and kind in ("Service", "Namespace", "ServiceAccount"):
                errors = check_service(doc) if kind == "Service" else []
            elif (group, version, kind) in schemas:
                validator = jsonschema.Draft4Validator(schemas[(group, version, kind)])
                errors = [
                    f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                    for e in validator.iter_errors(doc)
                ]
            else:
                errors = [f"no CRD for {api} {kind} under {crd_dir}"]
            if errors:
                failed = True
                print(f"INVALID {name}")
                for error in errors:
                    print(f"  {error}")
            else:
                print(f"valid {name}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
