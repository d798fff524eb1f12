#!/usr/bin/env python3
"""Exact checks on a pod as the apiserver stored it, for tests/e2e/run.sh.

Each command reads a pod's JSON (`kubectl get pod -o json`) from FILE (empty: the pod does
not exist), exits 0 when the pod is as wanted, and otherwise exits 1 and prints one line
saying what it found. Values are compared as exact strings (JSON-decoded on both sides),
so trailing newlines, tabs and spaces count; what is printed is JSON, so they show.

  env FILE CONTAINER NAME WANT    the container (in containers or initContainers) has
                                  exactly one variable NAME, with value WANT (a JSON
                                  string); WANT `absent`: no variable NAME
  env-all FILE CONTAINER NAME WANT N   exactly N variables NAME, every one with value WANT
  meta FILE KEY WANT              proxyMetadata[KEY] of the proxy.istio.io/config
                                  annotation (YAML or JSON) is WANT (a JSON string), or
                                  `absent`
  sidecar FILE LAYOUT             LAYOUT classic: one istio-proxy, in containers, and
                                  sidecar.istio.io/status lists it there; native: one
                                  istio-proxy in initContainers with restartPolicy Always,
                                  none in containers, and the status lists it in
                                  initContainers; none: no istio-proxy and no status
"""

from __future__ import annotations

import json
import sys

import yaml


class Mismatch(Exception):
    pass


def load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not text.strip():
        raise Mismatch("the pod does not exist")
    return json.loads(text)


def show(v) -> str:
    return json.dumps(v)


def containers(pod: dict, name: str) -> list[dict]:
    spec = pod.get("spec") or {}
    return [c for c in (spec.get("containers") or []) + (spec.get("initContainers") or []) if c.get("name") == name]


def env_values(pod: dict, container: str, name: str) -> list[str]:
    found = containers(pod, container)
    if len(found) != 1:
        raise Mismatch(f"{len(found)} containers named {container}")
    out = []
    for e in found[0].get("env") or []:
        if e.get("name") == name:
            if "valueFrom" in e:
                out.append({"valueFrom": e["valueFrom"]})
            else:
                out.append(e.get("value", ""))
    return out


def cmd_env(pod, container, name, want):
    got = env_values(pod, container, name)
    expected = [] if want == "absent" else [json.loads(want)]
    if got != expected:
        raise Mismatch(f"{container} has {name} = {show(got)}, want {show(expected)}")


def cmd_env_all(pod, container, name, want, count):
    got = env_values(pod, container, name)
    expected = [json.loads(want)] * int(count)
    if got != expected:
        raise Mismatch(f"{container} has {name} = {show(got)}, want {show(expected)}")


def cmd_meta(pod, key, want):
    text = ((pod.get("metadata") or {}).get("annotations") or {}).get("proxy.istio.io/config")
    meta = {}
    if text is not None:
        try:
            doc = yaml.safe_load(text)  # JSON is YAML too
        except yaml.YAMLError as e:
            raise Mismatch(f"proxy.istio.io/config does not parse: {' '.join(str(e).split())}") from e
        meta = (doc or {}).get("proxyMetadata") or {}
    if want == "absent":
        if key in meta:
            raise Mismatch(f"proxyMetadata.{key} = {show(meta[key])}, want no such key")
    elif key not in meta:
        raise Mismatch(f"proxyMetadata has no {key} (proxy.istio.io/config: {show(text)})")
    elif meta[key] != json.loads(want):
        raise Mismatch(f"proxyMetadata.{key} = {show(meta[key])}, want {want}")


def cmd_sidecar(pod, layout):
    spec = pod.get("spec") or {}
    names = [c.get("name") for c in spec.get("containers") or []]
    inits = [c.get("name") for c in spec.get("initContainers") or []]
    seen = f"containers {show(names)}, initContainers {show(inits)}"
    status_text = ((pod.get("metadata") or {}).get("annotations") or {}).get("sidecar.istio.io/status")
    if layout == "none":
        if "istio-proxy" in names + inits or status_text is not None:
            raise Mismatch(f"injected: {seen}, sidecar.istio.io/status {show(status_text)}")
        return
    field, here, there = ("containers", names, inits) if layout == "classic" else ("initContainers", inits, names)
    if here.count("istio-proxy") != 1 or "istio-proxy" in there:
        raise Mismatch(f"want one istio-proxy in {field}: {seen}")
    if layout == "native":
        policy = next(c for c in spec["initContainers"] if c.get("name") == "istio-proxy").get("restartPolicy")
        if policy != "Always":
            raise Mismatch(f"istio-proxy in initContainers has restartPolicy {show(policy)}, want \"Always\"")
    try:
        status = json.loads(status_text or "")
    except ValueError:
        raise Mismatch(f"sidecar.istio.io/status is {show(status_text)}") from None
    if "istio-proxy" not in (status.get(field) or []):
        raise Mismatch(f"sidecar.istio.io/status does not list istio-proxy in {field}: {status_text}")


COMMANDS = {"env": (cmd_env, 3), "env-all": (cmd_env_all, 4), "meta": (cmd_meta, 2), "sidecar": (cmd_sidecar, 1)}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in COMMANDS or len(argv) != 2 + COMMANDS[argv[0]][1]:
        print(__doc__, file=sys.stderr)
        return 2
    fn, _ = COMMANDS[argv[0]]
    try:
        fn(load(argv[1]), *argv[2:])
    except Mismatch as e:
        print(e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
