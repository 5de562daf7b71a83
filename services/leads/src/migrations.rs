//! The leads database schema, oldest first. Never edit a released migration; add one.

use kizuna_db::Migration;
use kizuna_store::BASE_MIGRATION;

/// Every migration of the leads database.
pub const MIGRATIONS: &[Migration] = &[
    BASE_MIGRATION,
    Migration {
        version: 2,
        description: "leads, activities, scoring models",
        sql: "
CREATE TABLE leads (
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
    industry TEXT NOT NULL,
    country_code TEXT NOT NULL,
    source TEXT NOT NULL,
    campaign TEXT NOT NULL,
    utm_source TEXT NOT NULL,
    utm_campaign TEXT NOT NULL,
    stage TEXT NOT NULL,
    score {{DOUBLE}} NOT NULL,
    grade TEXT NOT NULL,
    owner TEXT NOT NULL,
    PRIMARY KEY (parent, id)
);
CREATE UNIQUE INDEX leads_email_key ON leads (email_key) WHERE email_key <> '';
CREATE UNIQUE INDEX leads_phone_key ON leads (phone_key) WHERE phone_key <> '';
CREATE INDEX leads_create_time ON leads (create_time, id);
CREATE INDEX leads_stage ON leads (stage, create_time);

CREATE TABLE activities (
    id TEXT NOT NULL,
    parent TEXT NOT NULL,
    data {{BLOB}} NOT NULL,
    version BIGINT NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    kind TEXT NOT NULL,
    url TEXT NOT NULL,
    occur_time BIGINT NOT NULL,
    PRIMARY KEY (parent, id)
);
CREATE INDEX activities_occur_time ON activities (parent, occur_time, id);
CREATE INDEX activities_create_time ON activities (parent, create_time, id);

CREATE TABLE scoring_models (
    id TEXT NOT NULL,
    parent TEXT NOT NULL,
    data {{BLOB}} NOT NULL,
    version BIGINT NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    display_name TEXT NOT NULL,
    state TEXT NOT NULL,
    revision BIGINT NOT NULL,
    PRIMARY KEY (parent, id)
);
",
    },
    Migration {
        version: 3,
        description: "lead stage changes",
        sql: "
CREATE TABLE lead_stage_changes (
    id {{SERIAL_PK}},
    lead_name TEXT NOT NULL,
    from_stage TEXT NOT NULL,
    to_stage TEXT NOT NULL,
    cause TEXT NOT NULL,
    reason TEXT NOT NULL,
    score_reset BIGINT NOT NULL,
    change_time BIGINT NOT NULL
);
CREATE INDEX lead_stage_changes_lead ON lead_stage_changes (lead_name, id);
",
    },
    Migration {
        version: 4,
        description: "segments; lead tags for segment filters",
        sql: "
CREATE TABLE segments (
    id TEXT NOT NULL,
    parent TEXT NOT NULL,
    data {{BLOB}} NOT NULL,
    version BIGINT NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    display_name TEXT NOT NULL,
    PRIMARY KEY (parent, id)
);
ALTER TABLE leads ADD COLUMN tags TEXT NOT NULL DEFAULT '';
",
    },
    Migration {
        version: 5,
        description: "lead redirects left by merges",
        sql: "
CREATE TABLE lead_redirects (
    name TEXT NOT NULL PRIMARY KEY,
    target TEXT NOT NULL,
    merge_time BIGINT NOT NULL
);
CREATE INDEX lead_redirects_target ON lead_redirects (target);
",
    },
    Migration {
        version: 6,
        description: "incremental score state, batched score events, rescoring jobs",
        sql: "
CREATE TABLE lead_score_state (
    lead_name TEXT NOT NULL PRIMARY KEY,
    model TEXT NOT NULL,
    revision BIGINT NOT NULL,
    data {{BLOB}} NOT NULL,
    score {{DOUBLE}} NOT NULL,
    grade TEXT NOT NULL,
    notified_score {{DOUBLE}} NOT NULL,
    notified_grade TEXT NOT NULL,
    pending BIGINT NOT NULL
);
CREATE INDEX lead_score_state_pending ON lead_score_state (pending, lead_name);

CREATE TABLE rescoring_jobs (
    id TEXT NOT NULL,
    parent TEXT NOT NULL,
    data {{BLOB}} NOT NULL,
    version BIGINT NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    scoring_model TEXT NOT NULL,
    state TEXT NOT NULL,
    cursor TEXT NOT NULL DEFAULT '',
    lease_owner TEXT NOT NULL DEFAULT '',
    lease_expire BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (parent, id)
);
CREATE INDEX rescoring_jobs_state ON rescoring_jobs (state, create_time);
",
    },
    Migration {
        version: 7,
        description: "backfill of leads.tags for leads stored before version 4",
        sql: "
CREATE TABLE column_backfills (
    name TEXT NOT NULL PRIMARY KEY,
    after_parent TEXT NOT NULL,
    after_id TEXT NOT NULL,
    done BIGINT NOT NULL
);
INSERT INTO column_backfills (name, after_parent, after_id, done) VALUES ('leads.tags', '', '', 0);
",
    },
    kizuna_store::platform_migration(8),
    Migration {
        version: 9,
        description: "writer revision of each resource row (rolling upgrades)",
        sql: "
ALTER TABLE leads ADD COLUMN writer_revision BIGINT NOT NULL DEFAULT 0;
ALTER TABLE activities ADD COLUMN writer_revision BIGINT NOT NULL DEFAULT 0;
ALTER TABLE scoring_models ADD COLUMN writer_revision BIGINT NOT NULL DEFAULT 0;
ALTER TABLE segments ADD COLUMN writer_revision BIGINT NOT NULL DEFAULT 0;
ALTER TABLE rescoring_jobs ADD COLUMN writer_revision BIGINT NOT NULL DEFAULT 0;
",
    },
];
