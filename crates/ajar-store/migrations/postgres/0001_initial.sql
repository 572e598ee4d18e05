-- ajar's schema on PostgreSQL. Timestamps are integer microseconds since the
-- Unix epoch (UTC) so that they round-trip exactly and sort numerically.

CREATE TABLE requests (
    id                  TEXT PRIMARY KEY NOT NULL,
    target              TEXT NOT NULL,
    requester           TEXT NOT NULL,
    requester_groups    TEXT NOT NULL,          -- JSON array of group names
    requester_addr      TEXT NOT NULL,
    reason              TEXT NOT NULL,
    source              TEXT NOT NULL,          -- CIDR
    duration_seconds    BIGINT NOT NULL,
    state               TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    decide_by           BIGINT NOT NULL,
    starts_at           BIGINT,
    ends_at             BIGINT,
    approvals_required  BIGINT NOT NULL,
    approvals           TEXT NOT NULL,          -- JSON array of {approver, at, comment}
    closed_by           TEXT,
    close_comment       TEXT,
    policies            TEXT NOT NULL,          -- JSON array of policy names
    enforcement_status  TEXT NOT NULL,
    enforcement_error   TEXT
);
CREATE INDEX requests_by_state ON requests (state, ends_at);
CREATE INDEX requests_by_requester ON requests (requester, created_at);

-- Append-only: nothing in ajar updates or deletes a row of this table.
CREATE TABLE audit_events (
    seq         BIGINT PRIMARY KEY NOT NULL,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    source      TEXT,
    request_id  TEXT,
    subject     TEXT,
    reason      TEXT,
    data        TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_by_subject ON audit_events (subject, seq);
CREATE INDEX audit_by_actor ON audit_events (actor, seq);

-- Bearer tokens, stored as SHA-256 hashes: a copy of this table lets
-- nobody log in.
CREATE TABLE tokens (
    hash        TEXT PRIMARY KEY NOT NULL,
    user_name   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX tokens_by_expiry ON tokens (expires_at);
