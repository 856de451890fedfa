-- The counts of migration 3, kept in stripes, by triggers that read their transition tables
-- directly.
--
-- Stripes: migration 3 kept one client_totals row per page, which every write that adds or
-- removes one of the page's clients updates and holds until it commits. Grants to one page
-- from many requests at once therefore queued there, one commit (and one WAL flush) after the
-- other, and PostgreSQL could not flush several commits at once. Each page's counts are now
-- spread over up to 64 rows, chosen by the writing connection's server process, so concurrent
-- writers almost always update different rows, and the counts are the sums of a page's rows. A
-- stripe may go below zero (a client added through one connection and removed through another);
-- only the sums mean anything. A stripe's row for an end of access is removed when it reaches
-- zero.
--
-- Triggers: migration 3's turned every changed row into a JSON object, aggregated those into
-- one array and parsed it back into rows (jsonb_to_recordset), twice: about 10 ms of a
-- 2,000-row import batch's 60, for nothing but the detour. Same rules as before: rows that
-- cancel out touch no count and take no lock, and the count rows are upserted in key order so
-- two writers never wait on each other in a circle. An INSERT … ON CONFLICT DO UPDATE fires
-- both the insert and the update statement triggers (the update's tables empty when no row
-- conflicted): the update function returns at once when it has nothing to count.

ALTER TABLE client_totals ADD COLUMN stripe smallint NOT NULL DEFAULT 0;
ALTER TABLE client_totals DROP CONSTRAINT client_totals_pkey, ADD PRIMARY KEY (page, stripe);
ALTER TABLE client_ends ADD COLUMN stripe smallint NOT NULL DEFAULT 0;
ALTER TABLE client_ends DROP CONSTRAINT client_ends_pkey, ADD PRIMARY KEY (page, until, stripe);

-- The stripe this connection writes: the same for every statement of a transaction.
CREATE FUNCTION clients_count_stripe() RETURNS smallint LANGUAGE sql STABLE
    AS $$ SELECT (pg_backend_pid() % 64)::smallint $$;

CREATE OR REPLACE FUNCTION clients_counted_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    s smallint := clients_count_stripe();
BEGIN
    INSERT INTO client_totals AS t (page, stripe, total, unlimited)
        SELECT page, s, count(*), count(*) FILTER (WHERE access_until IS NULL)
        FROM added GROUP BY page ORDER BY page
    ON CONFLICT (page, stripe) DO UPDATE
        SET total = t.total + EXCLUDED.total, unlimited = t.unlimited + EXCLUDED.unlimited;
    INSERT INTO client_ends AS e (page, until, stripe, clients)
        SELECT page, access_until, s, count(*) FROM added WHERE access_until IS NOT NULL
        GROUP BY page, access_until ORDER BY page, access_until
    ON CONFLICT (page, until, stripe) DO UPDATE SET clients = e.clients + EXCLUDED.clients;
    DELETE FROM client_ends e USING (SELECT DISTINCT page, access_until FROM added) a
        WHERE e.page = a.page AND e.until = a.access_until AND e.stripe = s AND e.clients = 0;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION clients_counted_delete() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    s smallint := clients_count_stripe();
BEGIN
    INSERT INTO client_totals AS t (page, stripe, total, unlimited)
        SELECT page, s, -count(*), -count(*) FILTER (WHERE access_until IS NULL)
        FROM removed GROUP BY page ORDER BY page
    ON CONFLICT (page, stripe) DO UPDATE
        SET total = t.total + EXCLUDED.total, unlimited = t.unlimited + EXCLUDED.unlimited;
    INSERT INTO client_ends AS e (page, until, stripe, clients)
        SELECT page, access_until, s, -count(*) FROM removed WHERE access_until IS NOT NULL
        GROUP BY page, access_until ORDER BY page, access_until
    ON CONFLICT (page, until, stripe) DO UPDATE SET clients = e.clients + EXCLUDED.clients;
    DELETE FROM client_ends e USING (SELECT DISTINCT page, access_until FROM removed) r
        WHERE e.page = r.page AND e.until = r.access_until AND e.stripe = s AND e.clients = 0;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION clients_counted_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    s smallint;
BEGIN
    IF NOT EXISTS (SELECT FROM added) AND NOT EXISTS (SELECT FROM removed) THEN
        RETURN NULL;
    END IF;
    s := clients_count_stripe();
    WITH d AS (
        SELECT page, access_until, 1 AS n FROM added
        UNION ALL
        SELECT page, access_until, -1 FROM removed
    ), per_page AS (
        SELECT page, sum(n) AS total,
               coalesce(sum(n) FILTER (WHERE access_until IS NULL), 0) AS unlimited
        FROM d GROUP BY page
    )
    INSERT INTO client_totals AS t (page, stripe, total, unlimited)
        SELECT page, s, total, unlimited FROM per_page WHERE total <> 0 OR unlimited <> 0
        ORDER BY page
    ON CONFLICT (page, stripe) DO UPDATE
        SET total = t.total + EXCLUDED.total, unlimited = t.unlimited + EXCLUDED.unlimited;
    WITH d AS (
        SELECT page, access_until, 1 AS n FROM added WHERE access_until IS NOT NULL
        UNION ALL
        SELECT page, access_until, -1 FROM removed WHERE access_until IS NOT NULL
    ), per_end AS (
        SELECT page, access_until, sum(n) AS n FROM d GROUP BY page, access_until
    )
    INSERT INTO client_ends AS e (page, until, stripe, clients)
        SELECT page, access_until, s, n FROM per_end WHERE n <> 0 ORDER BY page, access_until
    ON CONFLICT (page, until, stripe) DO UPDATE SET clients = e.clients + EXCLUDED.clients;
    DELETE FROM client_ends e USING (
        SELECT page, access_until FROM added UNION SELECT page, access_until FROM removed
    ) c
        WHERE e.page = c.page AND e.until = c.access_until AND e.stripe = s AND e.clients = 0;
    RETURN NULL;
END
$$;

-- Migration 3's helper, used by nothing now.
DROP FUNCTION clients_apply_deltas(jsonb);
