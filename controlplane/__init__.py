"""The xDS control plane: tells Envoy over ADS what Consul knows.

`consul` watches Consul with blocking queries, `resources` turns that view into
versioned Envoy clusters and endpoints (pure), `store` holds the current snapshot,
`ads` serves it to every Envoy stream, `app` wires them. Configuration: `config`.
Trust: `ca` is the mesh CA, `sds` turns Envoy's certificate into SDS secrets on the
same stream, `rbac` renders the mesh policy as Envoy's RBAC filter.
Run: `python -m controlplane`.
"""
