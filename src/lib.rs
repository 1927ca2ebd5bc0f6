//! Roster: the people, accounts, projects and guests of an HPC site, declared as Kubernetes
//! resources and converged into LDAP, Slurm accounting and Gold.
#![forbid(unsafe_code)]

pub mod api;
pub mod backend;
pub mod cli;
pub mod clock;
pub mod config;
pub mod converge;
pub mod gold;
pub mod guest;
pub mod import;
pub mod ldap;
pub mod notice;
pub mod notify;
pub mod operator;
pub mod plan;
pub mod secret;
pub mod site;
pub mod slurm;
pub mod telemetry;
pub mod text;
pub mod tls;

#[cfg(test)]
mod module_graph;
