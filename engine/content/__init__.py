"""CRDT views computed from verified session logs: CoMap (LWW) and Group (roles)."""
