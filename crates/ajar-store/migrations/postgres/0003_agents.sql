-- Agents (`ajar agent`): the one-time enrolment tokens an admin hands out
-- (only the hash of each secret is kept) and the agents enrolled with them.
-- An agent is known by its name; the server accepts exactly one client
-- certificate from it, the one whose serial is recorded here.
CREATE TABLE agent_tokens (
    hash        TEXT PRIMARY KEY NOT NULL,
    agent_group TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    used_by     TEXT
);

CREATE TABLE agents (
    name           TEXT PRIMARY KEY NOT NULL,
    agent_group    TEXT NOT NULL,
    cert_serial    TEXT NOT NULL,
    cert_not_after BIGINT NOT NULL,
    enrolled_at    BIGINT NOT NULL,
    version        TEXT NOT NULL,
    last_seen      BIGINT,
    revoked_at     BIGINT,
    revoked_by     TEXT
);
