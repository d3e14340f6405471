"""Simulated fleets: one config's mock devices carried onto many API-only (KWOK) nodes."""
