//! End-to-end tests of the Kizuna services over real gRPC, on SQLite and PostgreSQL.

mod accounts;
mod auth;
mod balance;
mod client_contract;
mod deals;
mod events;
mod faults;
mod gateway;
mod health;
mod lead_backfill;
mod lead_bad_input;
mod lead_capture;
mod lead_ingest;
mod lead_stages;
mod leads;
mod platform;
mod segments;
mod shutdown;
