-- Prototype g3 (scratch database only): the chain sealed after commit, in batches.
--
-- Writers insert history unlinked (the BEFORE INSERT trigger of 0006 already blanks the
-- links) and no longer link at commit: the deferred link trigger is dropped, so a writer's
-- commit takes no tenant-wide lock and touches no tenant-wide row (the write statement also
-- leaves stage_counts alone). c360_seal(tenant, max) - run by one sealer per tenant (in the
-- gateway: the relay leader, before it publishes) - takes the tenant's chain lock, and for
-- the committed unlinked rows, oldest insert first: draws each row's replay seq, gives it
-- the next position, links it (the same c360_history_digest, the same columns), writes the
-- head, puts position and hash into the row's audit event (as the link step does today)
-- and applies the rows' stage deltas to stage_counts - all in one transaction, one WAL
-- flush per batch. Positions and seq therefore follow seal order, and a row becomes visible
-- to replay (chain_pos IS NOT NULL) only with a seq above every seq visible before it.
-- The summary is exact at any snapshot: stage_counts + the deltas of the rows not yet sealed.
\set ON_ERROR_STOP on
DROP TRIGGER lifecycle_history_link ON lifecycle_history;

CREATE INDEX ix_lifecycle_history_unsealed ON lifecycle_history (tenant_id, seq)
  WHERE chain_pos IS NULL;

-- Append-only, except filling the links of a row not yet linked, with its content unchanged
-- (whoever issues the UPDATE: the application's role has no UPDATE on history at all; this
-- binds the owner too). A wrong link would be named by `c360 audit verify`, as today.
CREATE OR REPLACE FUNCTION c360_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND OLD.row_hash IS NULL
     AND (NEW.id, NEW.tenant_id, NEW.customer_id, NEW.version, NEW.from_stage, NEW.to_stage,
          NEW.changed_at, NEW.changed_by, NEW.reason_code, NEW.source, NEW.config_version)
         IS NOT DISTINCT FROM
         (OLD.id, OLD.tenant_id, OLD.customer_id, OLD.version, OLD.from_stage, OLD.to_stage,
          OLD.changed_at, OLD.changed_by, OLD.reason_code, OLD.source, OLD.config_version)
  THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE FUNCTION c360_seal(p_tenant text, p_max int, OUT sealed int, OUT oldest_ms float8)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
-- The batch's rows are found by key, one index probe each, whatever the tables' size.
SET enable_hashjoin = off SET enable_mergejoin = off AS $$
DECLARE
  pos bigint;
  prev bytea;
  h lifecycle_history%ROWTYPE;
  ids uuid[] := '{}';
  seqs bigint[] := '{}';
  poss bigint[] := '{}';
  prevs bytea[] := '{}';
  hashes bytea[] := '{}';
  tos text[] := '{}';
  froms text[] := '{}';
  oldest timestamptz;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended('history-chain:' || p_tenant, 0));
  SELECT position, head INTO pos, prev FROM history_heads WHERE tenant_id = p_tenant;
  IF NOT FOUND THEN
    pos := 0;
    prev := decode(repeat('00', 32), 'hex');
  END IF;
  sealed := 0;
  FOR h IN SELECT * FROM lifecycle_history
           WHERE tenant_id = p_tenant AND chain_pos IS NULL ORDER BY seq LIMIT p_max LOOP
    h.seq := nextval(pg_get_serial_sequence('lifecycle_history', 'seq'));
    pos := pos + 1;
    h.chain_pos := pos;
    h.prev_hash := prev;
    h.row_hash := c360_history_digest(prev, h);
    prev := h.row_hash;
    ids := ids || h.id;
    seqs := seqs || h.seq;
    poss := poss || h.chain_pos;
    prevs := prevs || h.prev_hash;
    hashes := hashes || h.row_hash;
    tos := tos || h.to_stage;
    froms := froms || h.from_stage;
    oldest := LEAST(oldest, h.changed_at);
    sealed := sealed + 1;
  END LOOP;
  IF sealed = 0 THEN
    RETURN;
  END IF;
  UPDATE lifecycle_history l
    SET seq = u.seq, chain_pos = u.pos, prev_hash = u.prev, row_hash = u.hash
    FROM unnest(ids, seqs, poss, prevs, hashes) AS u(id, seq, pos, prev, hash)
    WHERE l.id = u.id;
  UPDATE outbox o
    SET history_seq = u.seq,
        payload = jsonb_set(o.payload, '{data,chain}', jsonb_build_object(
          'position', u.pos, 'hash', encode(u.hash, 'hex')))
    FROM unnest(ids, seqs, poss, hashes) AS u(id, seq, pos, hash)
    WHERE o.history_id = u.id;
  INSERT INTO stage_counts AS c (tenant_id, stage, count)
  SELECT p_tenant, stage, sum(d) FROM (
    SELECT unnest(tos) AS stage, 1 AS d
    UNION ALL SELECT f, -1 FROM unnest(froms) f WHERE f IS NOT NULL
  ) x GROUP BY stage HAVING sum(d) <> 0 ORDER BY stage
  ON CONFLICT (tenant_id, stage) DO UPDATE SET count = c.count + EXCLUDED.count;
  INSERT INTO history_heads (tenant_id, position, head, updated_at)
  VALUES (p_tenant, pos, prev, now())
  ON CONFLICT (tenant_id) DO UPDATE
    SET position = EXCLUDED.position, head = EXCLUDED.head, updated_at = EXCLUDED.updated_at;
  oldest_ms := extract(epoch FROM clock_timestamp() - oldest) * 1000;
END
$$;
GRANT EXECUTE ON FUNCTION c360_seal(text, int) TO :"app";

-- The summary read: sealed counts + the deltas of the committed rows not yet sealed
-- (a small partial-index scan), in one statement, so one snapshot.
CREATE FUNCTION c360_summary(p_tenant text) RETURNS TABLE (stage text, n bigint)
LANGUAGE sql STABLE AS $$
  SELECT stage, sum(n)::bigint FROM (
    SELECT stage, count AS n FROM stage_counts WHERE tenant_id = p_tenant
    UNION ALL
    SELECT s.stage, s.d FROM lifecycle_history h,
      LATERAL (VALUES (h.to_stage, 1), (h.from_stage, -1)) AS s(stage, d)
    WHERE h.tenant_id = p_tenant AND h.chain_pos IS NULL AND s.stage IS NOT NULL
  ) x GROUP BY stage
$$;
