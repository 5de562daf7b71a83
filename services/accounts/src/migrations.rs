//! The accounts database schema, oldest first. Never edit a released migration; add one.

use kizuna_db::Migration;
use kizuna_store::BASE_MIGRATION;

/// Every migration of the accounts database.
pub const MIGRATIONS: &[Migration] = &[
    BASE_MIGRATION,
    Migration {
        version: 2,
        description: "accounts, orders, cases",
        sql: "
CREATE TABLE accounts (
    id TEXT NOT NULL,
    parent TEXT NOT NULL,
    data {{BLOB}} NOT NULL,
    version BIGINT NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    display_name TEXT NOT NULL,
    type TEXT NOT NULL,
    parent_account TEXT NOT NULL,
    email TEXT NOT NULL,
    email_key TEXT NOT NULL,
    phone_key TEXT NOT NULL,
    owner TEXT NOT NULL,
    lead TEXT NOT NULL,
    deal TEXT NOT NULL,
    industry TEXT NOT NULL,
    country_code TEXT NOT NULL,
    region TEXT NOT NULL,
    PRIMARY KEY (parent, id)
);
CREATE UNIQUE INDEX accounts_deal ON accounts (deal) WHERE deal <> '';
CREATE INDEX accounts_parent_account ON accounts (parent_account, create_time);
CREATE INDEX accounts_email_key ON accounts (email_key);
CREATE INDEX accounts_phone_key ON accounts (phone_key);
CREATE INDEX accounts_lead ON accounts (lead);
CREATE INDEX accounts_create_time ON accounts (create_time, id);

CREATE TABLE orders (
    id TEXT NOT NULL,
    parent TEXT NOT NULL,
    data {{BLOB}} NOT NULL,
    version BIGINT NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    external_order_id TEXT NOT NULL,
    order_time BIGINT NOT NULL,
    status TEXT NOT NULL,
    currency_code TEXT NOT NULL,
    total_minor BIGINT NOT NULL,
    deal TEXT NOT NULL,
    PRIMARY KEY (parent, id)
);
CREATE UNIQUE INDEX orders_external_order_id ON orders (parent, external_order_id)
    WHERE external_order_id <> '';
CREATE INDEX orders_order_time ON orders (parent, order_time, id);
CREATE INDEX orders_create_time ON orders (parent, create_time, id);
CREATE INDEX orders_all_order_time ON orders (order_time, id);
CREATE INDEX orders_deal ON orders (deal);

CREATE TABLE cases (
    id TEXT NOT NULL,
    parent TEXT NOT NULL,
    data {{BLOB}} NOT NULL,
    version BIGINT NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    kind TEXT NOT NULL,
    priority TEXT NOT NULL,
    state TEXT NOT NULL,
    owner TEXT NOT NULL,
    sla_due_time BIGINT NOT NULL,
    resolve_time BIGINT NOT NULL,
    PRIMARY KEY (parent, id)
);
CREATE INDEX cases_create_time ON cases (parent, create_time, id);
CREATE INDEX cases_state_sla_due_time ON cases (state, sla_due_time, id);
",
    },
    kizuna_store::platform_migration(3),
    Migration {
        version: 4,
        description: "writer revision of each resource row (rolling upgrades)",
        sql: "
ALTER TABLE accounts ADD COLUMN writer_revision BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN writer_revision BIGINT NOT NULL DEFAULT 0;
ALTER TABLE cases ADD COLUMN writer_revision BIGINT NOT NULL DEFAULT 0;
",
    },
];
