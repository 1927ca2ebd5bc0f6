//! Gold protocol test server (being written; see the brief in the commit that fills it).
