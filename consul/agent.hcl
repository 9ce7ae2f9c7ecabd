# Consul agent for one machine: `consul agent -dev -config-file=consul/agent.hcl`.
# Dev mode keeps state in memory and runs a single server; services re-register
# on start, so nothing is lost that matters. Ports can be overridden on the
# command line (-http-port, -dns-port, -server-port, -serf-lan-port,
# -serf-wan-port, -grpc-port): flags take precedence over this file.

# Loopback only: nothing outside this machine can reach the agent or join its
# cluster. A multi-host deployment uses its own agent configuration.
bind_addr   = "127.0.0.1"
client_addr = "127.0.0.1"

# The web UI at http://127.0.0.1:8500/ui: operators see instances and checks.
ui = true

datacenter = "dc1"
log_level  = "INFO"

# The machines reach no HashiCorp endpoint; do not try.
disable_update_check = true

# Our checks are native gRPC health checks; no check may run a script.
enable_script_checks       = false
enable_local_script_checks = false

ports {
  http     = 8500
  dns      = 8600
  # Consul's own xDS (Connect) speaks only Envoy's removed v2 API: not used.
  grpc     = -1
}
