# ACLs on, default deny: with this file the agent answers nothing to a request
# without a token that allows it. `make up` (mesh/acl.py) bootstraps the ACL system
# and creates one token per service (a service identity: it may register its own
# name only), a read-only token for the control plane and the operator, and the
# agent's own token. Reference: https://developer.hashicorp.com/consul/docs/v1.8.x/security/acl
acl {
  enabled                  = true
  default_policy           = "deny"
  # NOTE: the agent token set through the API survives an agent restart only with this.
  enable_token_persistence = true
}
