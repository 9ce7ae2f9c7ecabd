"""The edge's global rate limit service: envoy.service.ratelimit.v3 backed by Redis.

Every Envoy asks it before a limited call; counts live in Redis, so a limit holds
across all edges together. docs/ratelimit.md says how limits are configured and
counted and what the edge does when this service or Redis is unreachable.
"""
