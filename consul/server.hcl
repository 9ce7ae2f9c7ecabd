# A Consul server of a 3-server cluster: one on each of three app hosts (`make hosts-up`
# runs it so; docs/deploy.md, on real machines). What differs per host comes as flags
# or a file of that host's own, because it is that host's: `-node` (its name),
# `-bind` (its address), `-client` (loopback and its address), `-retry-join` (each
# other server's address), `-data-dir`. ACLs come from acl.hcl beside this file; the
# host's consul-tls.hcl (0600, rendered by mesh/hosts.py) holds what is the host's own
# and secret: its certificate from the mesh CA (for checks, for RPC, where a server's
# names server.dc1.consul, and for HTTPS, where it names the host's address), the
# cluster's gossip key (`encrypt`), verify_incoming / verify_outgoing /
# verify_server_hostname, and the HTTP API's addresses: plain HTTP on loopback only,
# HTTPS (8501, verify_incoming_https) on the host's address (docs/deploy.md).
# Reference: https://developer.hashicorp.com/consul/docs/v1.8.x/agent/options

server = true
# No leader until three servers have joined: two partitions can never both elect one.
bootstrap_expect = 3

datacenter = "dc1"
log_level  = "INFO"

# The web UI on the agent's client addresses; reads need a token (ACLs default deny).
ui = true

# The machines reach no HashiCorp endpoint; do not try.
disable_update_check = true

# Our checks are native gRPC health checks; no check may run a script.
enable_script_checks       = false
enable_local_script_checks = false

# Servers on one fast network: elect in about a second and fail over in a few (the
# default multiplier of 5 is for slow, shared machines).
performance {
  raft_multiplier = 1
}

# A server that loses its peers keeps retrying to join them: a host restarted after a
# crash finds the cluster again with no operator.
retry_interval = "1s"

# A dead server is removed from the peer set once its replacement has joined (Autopilot),
# so a rebuilt host with a new node id does not leave a ghost voter behind.
autopilot {
  cleanup_dead_servers = true
}

ports {
  # Plain HTTP: loopback only (addresses.http in the host's consul-tls.hcl), for the
  # host's own processes. Other hosts use the HTTPS port set there.
  http = 8500
  dns  = 8600
  # Consul's own xDS (Connect) speaks only Envoy's removed v2 API: not used.
  grpc = -1
}
