//! Imports from upstream lists (ImportSource).

pub mod engine;
pub mod files;
pub mod read;
pub mod scheme;
pub mod source;
