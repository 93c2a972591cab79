//! Translating other load balancers' configurations into a ulvs config
//! (slow path, `ulvsadm import-*` only; the director never runs this).

pub mod keepalived;
