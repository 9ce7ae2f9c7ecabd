"""Envoy's bootstrap, rendered from the templates in envoy/ and the descriptor set.

`render` fills envoy/bootstrap.yaml from `Settings` (read from the environment once);
`service_routes` renders each service's routes on the edge and mesh listeners from
contract/routes.py;
`body_schema` derives edge.lua's route and body tables from the descriptor set;
`rate_limits` renders the edge's local or global rate limits. Not named `envoy`: that
is xds-protos' package, which the control plane imports.
"""
