-- Large client lists: contains-search and counts without reading a page's whole list.
--
-- `search` is what a search matches, written by pagegate with every client record: the email,
-- a line break, the name, lower-cased by pagegate itself (PostgreSQL's lower() depends on the
-- server's locale and leaves non-ASCII letters alone under "C"). Rows already here get it from
-- lower() once, below; the next write of each row replaces it. Its trigram index, which needs the
-- pg_trgm extension, is created after the migrations when the database allows it (see
-- connect.rs): without it a search reads the page's rows.
--
-- The counts are kept by statement triggers, so every write of a client row, by any gateway,
-- keeps them true: client_totals per page, client_ends per (page, end of access). The clients
-- active at a moment are the unlimited ones plus those whose end is later. A write that changes
-- a page's counts holds its client_totals row until it commits: writes to one page's list queue
-- there for the length of a commit, writes to different pages do not.

-- Rewriting a large table may take longer than a request's statement timeout.
SET LOCAL statement_timeout = 0;

ALTER TABLE clients ADD COLUMN search text NOT NULL DEFAULT '';
UPDATE clients SET search = lower(email) || E'\n' || lower(name);

CREATE TABLE client_totals (
    page text COLLATE "C" PRIMARY KEY,
    total bigint NOT NULL,
    unlimited bigint NOT NULL
);

CREATE TABLE client_ends (
    page text COLLATE "C" NOT NULL,
    until bigint NOT NULL,
    clients bigint NOT NULL,
    PRIMARY KEY (page, until)
);

INSERT INTO client_totals (page, total, unlimited)
    SELECT page, count(*), count(*) FILTER (WHERE access_until IS NULL) FROM clients GROUP BY page;
INSERT INTO client_ends (page, until, clients)
    SELECT page, access_until, count(*) FROM clients WHERE access_until IS NOT NULL
    GROUP BY page, access_until;

-- Applies the rows of `deltas` (page, end of access or NULL, +1 or -1) to the counts. Rows that
-- cancel out (a sign-in's last_login, a name change) touch no count and take no lock.
CREATE FUNCTION clients_apply_deltas(deltas jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    WITH d AS (
        SELECT x.page, x.until, x.n
        FROM jsonb_to_recordset(deltas) AS x(page text, until bigint, n bigint)
    ), per_page AS (
        SELECT page, sum(n) AS total, sum(n) FILTER (WHERE until IS NULL) AS unlimited
        FROM d GROUP BY page
        HAVING sum(n) <> 0 OR coalesce(sum(n) FILTER (WHERE until IS NULL), 0) <> 0
    )
    INSERT INTO client_totals AS t (page, total, unlimited)
        SELECT page COLLATE "C", total, coalesce(unlimited, 0) FROM per_page ORDER BY 1
    ON CONFLICT (page) DO UPDATE
        SET total = t.total + EXCLUDED.total, unlimited = t.unlimited + EXCLUDED.unlimited;

    WITH d AS (
        SELECT x.page, x.until, x.n
        FROM jsonb_to_recordset(deltas) AS x(page text, until bigint, n bigint)
        WHERE x.until IS NOT NULL
    ), per_end AS (
        SELECT page, until, sum(n) AS n FROM d GROUP BY page, until HAVING sum(n) <> 0
    )
    INSERT INTO client_ends AS e (page, until, clients)
        SELECT page COLLATE "C", until, n FROM per_end ORDER BY 1, 2
    ON CONFLICT (page, until) DO UPDATE SET clients = e.clients + EXCLUDED.clients;

    DELETE FROM client_ends e
        USING jsonb_to_recordset(deltas) AS x(page text, until bigint, n bigint)
        WHERE e.page = x.page AND e.until = x.until AND e.clients = 0;
END
$$;

CREATE FUNCTION clients_counted_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM clients_apply_deltas(
        (SELECT jsonb_agg(jsonb_build_object('page', page, 'until', access_until, 'n', 1))
         FROM added));
    RETURN NULL;
END
$$;

CREATE FUNCTION clients_counted_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM clients_apply_deltas(
        (SELECT jsonb_agg(jsonb_build_object('page', page, 'until', access_until, 'n', -1))
         FROM removed));
    RETURN NULL;
END
$$;

CREATE FUNCTION clients_counted_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM clients_apply_deltas(
        (SELECT jsonb_agg(d) FROM (
            SELECT jsonb_build_object('page', page, 'until', access_until, 'n', 1) AS d FROM added
            UNION ALL
            SELECT jsonb_build_object('page', page, 'until', access_until, 'n', -1) FROM removed
        ) changes));
    RETURN NULL;
END
$$;

CREATE TRIGGER clients_counted_insert AFTER INSERT ON clients
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION clients_counted_insert();
CREATE TRIGGER clients_counted_delete AFTER DELETE ON clients
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION clients_counted_delete();
CREATE TRIGGER clients_counted_update AFTER UPDATE ON clients
    REFERENCING OLD TABLE AS removed NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION clients_counted_update();
