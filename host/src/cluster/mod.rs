//! Kubernetes mode: the resources Promoter reads and writes in a cluster.

pub mod crd;
pub mod lease;
pub mod requests;
pub mod source;
