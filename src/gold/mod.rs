//! The Gold allocation manager backend, spoken over SSSRMAP (Gold's wire protocol).

pub mod proto;
pub mod server;
pub mod xml;
