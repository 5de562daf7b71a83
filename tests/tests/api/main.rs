//! End-to-end tests of the Kizuna services over real gRPC, on SQLite and PostgreSQL.

mod auth;
mod events;
mod health;
mod leads;
