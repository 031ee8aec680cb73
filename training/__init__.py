"""Routing datasets, router training and evaluation, and the `coe data/train/eval/calibrate` CLI.

`training` imports `router` (and may import `experts`); nothing in `router` imports `training`.
"""
