//! The deals database schema, oldest first. Never edit a released migration; add one.

use kizuna_db::Migration;
use kizuna_store::BASE_MIGRATION;

/// Every migration of the deals database.
pub const MIGRATIONS: &[Migration] = &[
    BASE_MIGRATION,
    Migration {
        version: 2,
        description: "pipelines, deals, stage history, contacts",
        sql: "
CREATE TABLE pipelines (
    id TEXT NOT NULL,
    parent TEXT NOT NULL,
    data {{BLOB}} NOT NULL,
    version BIGINT NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    display_name TEXT NOT NULL,
    is_default BIGINT NOT NULL,
    PRIMARY KEY (parent, id)
);
CREATE UNIQUE INDEX pipelines_default ON pipelines (is_default) WHERE is_default = 1;
CREATE INDEX pipelines_create_time ON pipelines (create_time, id);

CREATE TABLE deals (
    id TEXT NOT NULL,
    parent TEXT NOT NULL,
    data {{BLOB}} NOT NULL,
    version BIGINT NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    display_name TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    stage TEXT NOT NULL,
    state TEXT NOT NULL,
    owner TEXT NOT NULL,
    lead TEXT NOT NULL,
    account TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency_code TEXT NOT NULL,
    expected_close BIGINT NOT NULL,
    probability {{DOUBLE}} NOT NULL,
    close_time BIGINT NOT NULL,
    PRIMARY KEY (parent, id)
);
CREATE INDEX deals_create_time ON deals (create_time, id);
CREATE INDEX deals_pipeline ON deals (pipeline, state, stage);
CREATE INDEX deals_owner ON deals (owner, state);
CREATE INDEX deals_lead ON deals (lead);
CREATE INDEX deals_expected_close ON deals (expected_close, id);

CREATE TABLE deal_stage_history (
    sequence {{SERIAL_PK}},
    deal_id TEXT NOT NULL,
    from_pipeline TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    from_stage TEXT NOT NULL,
    to_stage TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency_code TEXT NOT NULL,
    change_time BIGINT NOT NULL
);
CREATE INDEX deal_stage_history_deal ON deal_stage_history (deal_id, sequence);
CREATE INDEX deal_stage_history_pipeline ON deal_stage_history (pipeline, change_time);

CREATE TABLE contacts (
    id TEXT NOT NULL,
    parent TEXT NOT NULL,
    data {{BLOB}} NOT NULL,
    version BIGINT NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    email TEXT NOT NULL,
    email_key TEXT NOT NULL,
    phone_key TEXT NOT NULL,
    given_name TEXT NOT NULL,
    family_name TEXT NOT NULL,
    company TEXT NOT NULL,
    owner TEXT NOT NULL,
    lead TEXT NOT NULL,
    PRIMARY KEY (parent, id)
);
CREATE UNIQUE INDEX contacts_email_key ON contacts (email_key) WHERE email_key <> '';
CREATE UNIQUE INDEX contacts_phone_key ON contacts (phone_key) WHERE phone_key <> '';
CREATE INDEX contacts_create_time ON contacts (create_time, id);
CREATE INDEX contacts_lead ON contacts (lead);
",
    },
    kizuna_store::platform_migration(3),
    Migration {
        version: 4,
        description: "writer revision of each resource row (rolling upgrades)",
        sql: "
ALTER TABLE pipelines ADD COLUMN writer_revision BIGINT NOT NULL DEFAULT 0;
ALTER TABLE deals ADD COLUMN writer_revision BIGINT NOT NULL DEFAULT 0;
ALTER TABLE contacts ADD COLUMN writer_revision BIGINT NOT NULL DEFAULT 0;
",
    },
];
