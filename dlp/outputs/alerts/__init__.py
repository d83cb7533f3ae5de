"""Alerts on registry state changes (issue 5): the pure state machine, the alert value, its
renderings (Adaptive Card, email bodies) and one module per delivery channel.

`dlp.outputs.alerting` wires them together behind the pipeline's `Notifier` interface. A new channel is
one module with a class that has `name` and `send(alerts, digest=...)`, plus a line in
`dlp.outputs.alerting.build_channels`.
"""
