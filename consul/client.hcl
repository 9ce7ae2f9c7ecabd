# A Consul client agent: on every host that runs services but no server (all but three
# or five hosts of a larger deployment; docs/deploy.md). It forwards to the servers,
# runs its local instances' health checks and answers its control plane's reads.
# Per host, as flags: `-node`, `-bind`, `-client`, `-retry-join` (the servers), `-data-dir`;
# with acl.hcl and the host's consul-tls.hcl (its mesh certificate, the gossip key, TLS
# on RPC, plain HTTP on loopback and HTTPS with client certificates on its address), as
# on a server: without the key it cannot join, without the certificate the servers
# refuse its RPC.

server = false
datacenter = "dc1"
log_level  = "INFO"
disable_update_check = true
enable_script_checks       = false
enable_local_script_checks = false
retry_interval = "1s"

ports {
  http = 8500
  dns  = 8600
  grpc = -1
}
