"""The xDS control plane: tells Envoy over ADS what Consul knows.

`consul` watches Consul with blocking queries, `resources` turns that view into
versioned Envoy clusters and endpoints (pure), `store` holds the current snapshot,
`ads` serves it to every Envoy stream, `app` wires them. Configuration: `config`.
Run: `python -m controlplane`.
"""
