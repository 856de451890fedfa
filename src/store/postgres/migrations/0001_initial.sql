-- pagegate's first PostgreSQL schema. Applied once, in one transaction, under an advisory lock.
--
-- A store namespace ("site") may hold a NUL byte (an admin namespace is "admin\0SITE"), which
-- PostgreSQL's text cannot, so namespace columns are bytea holding the UTF-8 bytes. Records
-- that are only ever read whole (codes, link tokens, sign-in links, grant orders, audit entries)
-- are JSON in bytea, as in the redb file, so a field can be added without a migration; columns
-- exist beside them where a query selects, orders or prunes by them.

-- Byte order ("C"), as the redb file sorts: the same order on every server, whatever its
-- locale, and one an index on (page, email) serves.
CREATE TABLE clients (
    page text COLLATE "C" NOT NULL,
    email text COLLATE "C" NOT NULL,
    name text NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    access_until bigint,
    source text NOT NULL,
    last_login bigint,
    -- Lists are read by page in email order, and paged by (page, email) keyset.
    PRIMARY KEY (page, email)
);
-- A session's check and a revocation look a person up on several pages at once.
CREATE INDEX clients_by_email ON clients (email, page);

CREATE TABLE codes (
    site bytea NOT NULL,
    email text NOT NULL,
    token_hash bytea NOT NULL,
    expires_at bigint NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (site, email)
);
CREATE INDEX codes_by_expiry ON codes (expires_at);

CREATE TABLE tokens (
    token_hash bytea PRIMARY KEY,
    expires_at bigint NOT NULL,
    record bytea NOT NULL
);
CREATE INDEX tokens_by_expiry ON tokens (expires_at);

-- Wrong-code counters: browser '' is the count over all browsers of (site, email).
CREATE TABLE attempts (
    site bytea NOT NULL,
    email text NOT NULL,
    browser bytea NOT NULL,
    failures integer NOT NULL,
    window_start bigint NOT NULL,
    PRIMARY KEY (site, email, browser)
);
CREATE INDEX attempts_by_window ON attempts (window_start);

CREATE TABLE sessions (
    session_hash bytea PRIMARY KEY,
    site bytea NOT NULL,
    email text NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX sessions_by_email ON sessions (site, email);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

-- Grant orders, keyed by "key name \0 order id" (an order id is the shop's text).
CREATE TABLE grants (
    order_key bytea PRIMARY KEY,
    updated_at bigint NOT NULL,
    record bytea NOT NULL
);
CREATE INDEX grants_by_age ON grants (updated_at);

CREATE TABLE signatures (
    signature_hash bytea PRIMARY KEY,
    until bigint NOT NULL
);
CREATE INDEX signatures_by_until ON signatures (until);

CREATE TABLE signins (
    link_hash bytea PRIMARY KEY,
    site bytea NOT NULL,
    expires_at bigint NOT NULL,
    record bytea NOT NULL
);
CREATE INDEX signins_by_expiry ON signins (expires_at);

CREATE TABLE audit (
    id bigserial PRIMARY KEY,
    at bigint NOT NULL,
    record bytea NOT NULL
);
CREATE INDEX audit_by_time ON audit (at);

-- Moved after every committed write, by every gateway: what Store::changes reports.
CREATE SEQUENCE changes;
