#!/usr/bin/env python3
"""Converts one served version of a CustomResourceDefinition to the offline JSON Schema that
scripts/validate_k8s.py checks custom resources against (k8s/schemas/README.md, "How the CRD
schemas were converted": this is that conversion, and it gives the Dapr files there byte for
byte from their CRDs).

    scripts/crd_to_jsonschema.py CRD.yaml VERSION REPO PATH TAG COMMIT > k8s/schemas/<group>_<version>_<Kind>.json

CRD.yaml is the upstream file (REPO's PATH at TAG, COMMIT), VERSION one of its spec.versions.
"""

import json
import re
import sys

import yaml

# The ObjectMeta checks the API server applies to a custom resource's metadata (README).
OBJECT_META = json.loads(r"""
{
 "description": "Kubernetes ObjectMeta (subset of checks: field names, types, name/namespace/label syntax). Added by the converter; not part of the CRD.",
 "type": "object",
 "additionalProperties": false,
 "anyOf": [
  {
   "required": [
    "name"
   ]
  },
  {
   "required": [
    "generateName"
   ]
  }
 ],
 "properties": {
  "name": {
   "type": "string",
   "maxLength": 253,
   "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
  },
  "generateName": {
   "type": "string"
  },
  "namespace": {
   "type": "string",
   "maxLength": 63,
   "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
  },
  "labels": {
   "type": "object",
   "propertyNames": {
    "maxLength": 317,
    "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
   },
   "additionalProperties": {
    "type": "string",
    "maxLength": 63,
    "pattern": "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
   }
  },
  "annotations": {
   "type": "object",
   "propertyNames": {
    "maxLength": 317,
    "pattern": "^([A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
   },
   "additionalProperties": {
    "type": "string"
   }
  },
  "finalizers": {
   "type": "array",
   "items": {
    "type": "string"
   }
  },
  "ownerReferences": {
   "type": "array",
   "items": {
    "type": "object",
    "additionalProperties": false,
    "required": [
     "apiVersion",
     "kind",
     "name",
     "uid"
    ],
    "properties": {
     "apiVersion": {
      "type": "string"
     },
     "kind": {
      "type": "string"
     },
     "name": {
      "type": "string"
     },
     "uid": {
      "type": "string"
     },
     "controller": {
      "type": "boolean"
     },
     "blockOwnerDeletion": {
      "type": "boolean"
     }
    }
   }
  },
  "uid": {
   "type": "string"
  },
  "resourceVersion": {
   "type": "string"
  },
  "generation": {
   "type": "integer"
  },
  "creationTimestamp": {
   "type": [
    "string",
    "null"
   ]
  },
  "deletionTimestamp": {
   "type": [
    "string",
    "null"
   ]
  },
  "deletionGracePeriodSeconds": {
   "type": "integer"
  },
  "managedFields": {
   "type": "array",
   "items": {
    "type": "object"
   }
  },
  "selfLink": {
   "type": "string"
  }
 }
}
""")
COMMENT = ("Converted from CRD {crd} version {version}; source: github.com/{repo} {path} @ {tag} ({commit}). "
           "Upstream licence Apache-2.0. OpenAPI v3 -> JSON Schema draft-07: apiVersion/kind pinned with const; additionalProperties:false added to every object with properties (except x-kubernetes-preserve-unknown-fields and allOf/anyOf/oneOf branches), matching kubectl strict field validation; x-kubernetes-int-or-string -> anyOf integer/string; metadata checked against #/definitions/ObjectMeta. x-kubernetes-validations (CEL) kept as annotations only and NOT enforced.")
CASE_FLAG = " Go's inline flag (?i) rewritten as a character class per letter: ECMA-262 patterns have no inline flags."


def ecma_pattern(pattern):
    """A Go (RE2) pattern as an ECMA-262 one: a `(?i)` flag becomes [aA]-style classes (only for
    patterns with no classes or escapes after it, which is all the CRDs here have)."""
    if "(?i)" not in pattern:
        return pattern, False
    head, rest = pattern.split("(?i)", 1)
    if "[" in rest or "\\" in rest or "(?" in rest:
        raise SystemExit(f"cannot rewrite the (?i) pattern {pattern!r}")
    return head + re.sub(r"[A-Za-z]", lambda m: f"[{m[0].lower()}{m[0].upper()}]", rest), True


def convert(node, rewrote, in_branch=False):
    if isinstance(node, list):
        return [convert(v, rewrote, in_branch) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("allOf", "anyOf", "oneOf", "not"):
            out[key] = convert(value, rewrote, True)
        elif key == "properties":
            out[key] = {name: convert(schema, rewrote) for name, schema in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = convert(value, rewrote)
        elif key == "pattern" and isinstance(value, str):
            out[key], changed = ecma_pattern(value)
            rewrote.append(changed)
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") is True and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in out and not in_branch and not node.get("x-kubernetes-preserve-unknown-fields") \
            and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def main(crd_file, version, repo, path, tag, commit):
    crd = next(d for d in yaml.safe_load_all(open(crd_file)) if d and d.get("kind") == "CustomResourceDefinition")
    spec = crd["spec"]
    served = next(v for v in spec["versions"] if v["name"] == version)
    group, kind = spec["group"], spec["names"]["kind"]
    api_version = f"{group}/{version}"
    rewrote = []
    schema = convert(served["schema"]["openAPIV3Schema"], rewrote)
    properties = dict(schema["properties"])
    for name, const in (("apiVersion", api_version), ("kind", kind)):
        properties[name] = {"type": "string", "const": const, **{k: v for k, v in properties[name].items() if k != "type"}}
    properties["metadata"] = {"$ref": "#/definitions/ObjectMeta"}
    schema["properties"] = properties
    schema["required"] = list(schema.get("required", []))
    schema["required"] += [r for r in ("apiVersion", "kind", "metadata") if r not in schema["required"]]
    comment = COMMENT.format(crd=crd["metadata"]["name"], version=version, repo=repo, path=path, tag=tag, commit=commit)
    out = {"$schema": "http://json-schema.org/draft-07/schema#", "title": f"{kind} ({api_version})",
           "$comment": comment + (CASE_FLAG if any(rewrote) else "")}
    out.update(schema)
    out["definitions"] = {"ObjectMeta": OBJECT_META}
    sys.stdout.write(json.dumps(out, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 7:
        sys.exit(__doc__)
    main(*sys.argv[1:])
