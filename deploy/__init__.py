"""Deployments rendered from a pool file: the compose stacks and Kubernetes manifests.

The pool file is the one source of truth: every expert service, its port and the model it
serves come from it, so the gateway and what it calls cannot disagree. `coe deploy compose` and
`coe deploy k8s` write the files; `coe deploy check` says whether the shipped ones drifted.
"""
