#!/usr/bin/env python3
"""Validates rendered Kubernetes manifests offline, strictly (unknown fields are errors).

    validate-manifests.py [-k VERSION]... FILE...

Built-in kinds are checked by kubernetes-validate against the Kubernetes JSON schemas of
each VERSION. The prometheus-operator kinds (ServiceMonitor, PodMonitor, PrometheusRule),
for which kubernetes-validate has no schema, are checked by the cloudcoil models that are
generated from the operator's CRDs; a field the model does not know is reported as unknown.
Any other kind is an error: nothing is passed unchecked.
Run it with the venv scripts/deps.sh test makes ($TRACEPKT_VENV, default
~/.cache/tracepkt/venv: bin/python).
"""

import argparse
import sys

import kubernetes_validate
import pydantic
import yaml
from cloudcoil.models.prometheus_operator import v1 as monitoring_v1

CUSTOM = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring_v1.ServiceMonitor,
    ("monitoring.coreos.com/v1", "PodMonitor"): monitoring_v1.PodMonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): monitoring_v1.PrometheusRule,
}


def unknown_fields(given, kept, path=""):
    """Paths of mapping keys in `given` that the model dropped (pydantic ignores them)."""
    out = []
    if isinstance(given, dict) and isinstance(kept, dict):
        for k, v in given.items():
            p = f"{path}.{k}" if path else k
            if k not in kept:
                out.append(p)
            else:
                out.extend(unknown_fields(v, kept[k], p))
    elif isinstance(given, list) and isinstance(kept, list):
        for i, (g, k) in enumerate(zip(given, kept)):
            out.extend(unknown_fields(g, k, f"{path}[{i}]"))
    return out


def check_custom(model, doc):
    try:
        obj = model.model_validate(doc)
    except pydantic.ValidationError as e:
        return [str(e)]
    kept = obj.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return [f"{p}: unknown field" for p in unknown_fields(doc, kept)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", "--kubernetes-version", action="append", dest="versions")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    versions = args.versions or [kubernetes_validate.latest_version()]
    failed = checked = 0
    for f in args.files:
        with open(f) as fh:
            docs = [d for d in yaml.safe_load_all(fh) if d]
        for doc in docs:
            kind, api = doc.get("kind"), doc.get("apiVersion")
            name = f"{f}: {kind} {doc.get('metadata', {}).get('name')}"
            errors = []
            model = CUSTOM.get((api, kind))
            if model is not None:
                errors = check_custom(model, doc)
                how = "prometheus-operator model"
            else:
                how = "Kubernetes " + ", ".join(versions)
                for v in versions:
                    try:
                        kubernetes_validate.validate(doc, v, strict=True)
                    except kubernetes_validate.ValidationError as e:
                        where = ".".join(str(p) for p in e.path)
                        errors.append(f"{v}: {where}: {e.message}")
                    except kubernetes_validate.SchemaNotFoundError as e:
                        errors.append(e.message)
            checked += 1
            if errors:
                failed += 1
                print(f"INVALID {name} ({how}):", file=sys.stderr)
                for e in errors:
                    print(f"  {e}", file=sys.stderr)
            else:
                print(f"valid   {name} ({how})")
    print(f"{checked} manifests checked, {failed} invalid")
    return 1 if failed or not checked else 0


if __name__ == "__main__":
    sys.exit(main())
