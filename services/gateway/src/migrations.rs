//! The gateway database schema, oldest first. Never edit a released migration; add one.

use kizuna_db::Migration;
use kizuna_store::BASE_MIGRATION;

/// Every migration of the gateway database.
pub const MIGRATIONS: &[Migration] = &[
    BASE_MIGRATION,
    Migration {
        version: 2,
        description: "subjects and lifecycle transitions",
        sql: "
CREATE TABLE subjects (
    id TEXT NOT NULL,
    parent TEXT NOT NULL,
    data {{BLOB}} NOT NULL,
    version BIGINT NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    display_name TEXT NOT NULL,
    email TEXT NOT NULL,
    email_key TEXT NOT NULL,
    phone TEXT NOT NULL,
    phone_key TEXT NOT NULL,
    lead TEXT NOT NULL,
    deals TEXT NOT NULL,
    account TEXT NOT NULL,
    stage TEXT NOT NULL,
    PRIMARY KEY (parent, id)
);
CREATE UNIQUE INDEX subjects_lead ON subjects (lead) WHERE lead <> '';
CREATE UNIQUE INDEX subjects_account ON subjects (account) WHERE account <> '';
CREATE INDEX subjects_email_key ON subjects (email_key);
CREATE INDEX subjects_phone_key ON subjects (phone_key);
CREATE INDEX subjects_stage ON subjects (stage, create_time);
CREATE INDEX subjects_display_name ON subjects (display_name, id);
CREATE INDEX subjects_create_time ON subjects (create_time, id);

CREATE TABLE transitions (
    id TEXT NOT NULL,
    parent TEXT NOT NULL,
    data {{BLOB}} NOT NULL,
    version BIGINT NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    from_stage TEXT NOT NULL,
    to_stage TEXT NOT NULL,
    cause_service TEXT NOT NULL,
    cause_event_type TEXT NOT NULL,
    cause_event_sequence BIGINT NOT NULL,
    transition_time BIGINT NOT NULL,
    PRIMARY KEY (parent, id)
);
CREATE INDEX transitions_parent_time ON transitions (parent, transition_time, id);
CREATE INDEX transitions_time ON transitions (transition_time, id);
CREATE INDEX transitions_from_stage ON transitions (from_stage, transition_time);
CREATE INDEX transitions_to_stage ON transitions (to_stage, transition_time);
CREATE INDEX transitions_cause ON transitions (cause_service, cause_event_sequence);
CREATE INDEX transitions_cause_event_type ON transitions (cause_event_type, transition_time);
",
    },
    kizuna_store::platform_migration(3),
    Migration {
        version: 4,
        description: "writer revision of each resource row (rolling upgrades)",
        sql: "
ALTER TABLE subjects ADD COLUMN writer_revision BIGINT NOT NULL DEFAULT 0;
ALTER TABLE transitions ADD COLUMN writer_revision BIGINT NOT NULL DEFAULT 0;
",
    },
];
