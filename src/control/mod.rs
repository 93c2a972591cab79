//! The slow path: configuration, ARP, the kernel drop rule, the control
//! socket protocol and building the forwarding table. Uses `fwd`; never
//! dataplane internals.

pub mod arp;
pub mod config;
pub mod ctl;
pub mod director;
pub mod health;
pub mod hostroutes;
pub mod import;
pub mod metrics;
pub mod ndp;
pub mod netlink;
pub mod nft;
pub mod process;
pub mod publish;
pub mod publish6;
pub mod rates;
pub mod route;
pub mod serve;
pub mod snapshot;
pub mod status_page;
pub mod trace;
pub mod watchdog;
