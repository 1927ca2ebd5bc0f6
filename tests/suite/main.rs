//! Roster's integration suite, one test binary: each module is what used to be its own
//! `tests/*.rs` binary, and `support` (the dev backends, private subtrees, the shared `World`,
//! poll helpers) is compiled once for all of them. One binary links once instead of nineteen
//! times; `cargo nextest run` still runs every test in its own process, and
//! `cargo test --test suite safety::` (or `-E 'test(/^operator::/)'`) selects one module.

mod support;

mod apply;
mod chart;
mod config_check;
mod consumers;
mod crds;
mod faults;
mod gold;
mod guest_extend;
mod hostile;
mod image;
mod import;
mod import_readers;
mod incremental;
mod kubectl;
mod ldap_feed;
mod ldap_schema;
mod notices;
mod notify;
mod operator;
mod safety;
mod secrets;
mod slurm;
mod tls;
