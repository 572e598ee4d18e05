-- People and machines that signed in through an identity provider (SSO,
-- trusted JWT bearer tokens). A name stays bound to the first (issuer,
-- subject) that used it; groups are those of the latest sign-in, already
-- mapped to ajar groups (a JSON array of names).
CREATE TABLE identities (
    name        TEXT PRIMARY KEY NOT NULL,
    issuer      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    email       TEXT,
    groups      TEXT NOT NULL,
    first_seen  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL
);
CREATE UNIQUE INDEX identities_by_account ON identities (issuer, subject);
