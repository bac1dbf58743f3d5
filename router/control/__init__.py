"""The control plane: decides which version serves.

`core.ChangeCore` is the one change function: every change of weights or roles goes through
it, durable (`store`, `durable`) before it is acknowledged. The parts built on it are composed
in order by `plane.ControlPlane`: the guardrail `watcher` (rules in `guardrails`, bounds from
`confidence`), the `warm` window, `drill`s and the `rollout` ramp. `moves` holds the deploy
stack's pure moves; `restore` and `reload` read state and config; `notify` announces changes.
"""
