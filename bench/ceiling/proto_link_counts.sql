-- Prototype g2 (scratch database only): stage counts applied by the commit-time link step.
-- The write statement no longer touches stage_counts; the deferred link trigger, which
-- already holds the tenant's chain lock to commit, adds +1/-1 per history row it links.
-- Only lock holders touch a tenant's count rows, so the counts add no wait of their own.
\set ON_ERROR_STOP on
CREATE OR REPLACE FUNCTION c360_history_link() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  pos bigint;
  prev bytea;
  s bigint;
  h lifecycle_history%ROWTYPE;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended('history-chain:' || NEW.tenant_id, 0));
  SELECT position, head INTO pos, prev FROM history_heads WHERE tenant_id = NEW.tenant_id;
  IF NOT FOUND THEN
    pos := 0;
    prev := decode(repeat('00', 32), 'hex');
  END IF;
  s := nextval(pg_get_serial_sequence('lifecycle_history', 'seq'));
  h := NEW;
  h.seq := s;
  h.chain_pos := pos + 1;
  h.prev_hash := prev;
  h.row_hash := c360_history_digest(prev, h);
  UPDATE lifecycle_history
    SET seq = h.seq, chain_pos = h.chain_pos, prev_hash = h.prev_hash, row_hash = h.row_hash
    WHERE id = NEW.id;
  INSERT INTO history_heads (tenant_id, position, head, updated_at)
  VALUES (NEW.tenant_id, h.chain_pos, h.row_hash, now())
  ON CONFLICT (tenant_id) DO UPDATE
    SET position = EXCLUDED.position, head = EXCLUDED.head, updated_at = EXCLUDED.updated_at;
  UPDATE outbox
    SET history_seq = s,
        payload = jsonb_set(payload, '{data,chain}', jsonb_build_object(
          'position', h.chain_pos, 'hash', encode(h.row_hash, 'hex')))
    WHERE history_id = NEW.id;
  -- the counts, under the lock the chain already holds
  INSERT INTO stage_counts AS c (tenant_id, stage, count) VALUES (NEW.tenant_id, NEW.to_stage, 1)
  ON CONFLICT (tenant_id, stage) DO UPDATE SET count = c.count + 1;
  IF NEW.from_stage IS NOT NULL THEN
    UPDATE stage_counts SET count = count - 1
      WHERE tenant_id = NEW.tenant_id AND stage = NEW.from_stage;
  END IF;
  RETURN NULL;
END
$$;

CREATE FUNCTION c360_summary(p_tenant text) RETURNS TABLE (stage text, n bigint)
LANGUAGE sql STABLE AS $$
  SELECT stage, count FROM stage_counts WHERE tenant_id = p_tenant
$$;
