//! Deterministic simulation of sse-cluster nodes under turmoil. The harness grows
//! with the cluster; for now it runs one real node inside a simulation.
