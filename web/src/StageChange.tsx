// The stage picker: exactly allowedNextStages; a reason where the tenant requires one; sent with
// expectedVersion and an idempotency key (the same key for a retry of the same change).
import { useEffect, useMemo, useState } from "preact/hooks";
import { type Problem, problem } from "./api";
import type { Lifecycle } from "./CustomerDetail";
import { useSession } from "./context";
import { key, when } from "./format";
import { Notice } from "./Notice";

const MOVE = `mutation Move($input: UpdateLifecycleStageInput!) {
  updateLifecycleStage(input: $input) {
    success updatedAt
    transition { id fromStage toStage changedAt changedBy }
    customer { id lifecycle { id stage enteredAt updatedBy version allowedNextStages } }
  }
}`;

interface Props {
  customerId: string;
  lifecycle: Lifecycle;
  idem?: string;
  onDone(): void;
}

export function StageChange({ customerId, lifecycle: lc, onDone }: Props) {
  const { gw, config } = useSession();
  const [stage, setStage] = useState("");
  const [reason, setReason] = useState("");
  const [sending, setSending] = useState(false);
  const [err, setErr] = useState<Problem | null>(null);
  const [conflict, setConflict] = useState<{ wanted: string; sent: number } | null>(null);
  const [saved, setSaved] = useState<string | null>(null);
  const [waitUntil, setWaitUntil] = useState(0);
  const [, setNow] = useState(0);
  const idempotencyKey = useMemo(key, [lc.version, stage, reason]);
  const needsReason = stage !== "" && config.requiredReasonCodes.includes(stage);

  useEffect(() => setStage((s) => (lc.allowedNextStages.includes(s) ? s : "")), [lc.id]);
  useEffect(() => {
    if (waitUntil <= Date.now()) return;
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, [waitUntil]);
  const waiting = Math.ceil((waitUntil - Date.now()) / 1000);

  const submit = async (e: Event) => {
    e.preventDefault();
    if (!stage || (needsReason && !reason.trim())) return;
    setSending(true);
    setErr(null);
    setConflict(null);
    setSaved(null);
    const input = {
      customerId,
      stage,
      reasonCode: reason.trim() || null,
      expectedVersion: lc.version,
      idempotencyKey,
    };
    const r = await gw.client.mutation(MOVE, { input }).toPromise();
    setSending(false);
    const p = problem(r.error);
    if (p?.code === "CONFLICT") {
      setConflict({ wanted: stage, sent: lc.version });
      onDone(); // show the new state
      return;
    }
    if (p) {
      setErr(p);
      if (p.code === "RATE_LIMITED") setWaitUntil(Date.now() + (p.retryAfter ?? 60) * 1000);
      return;
    }
    setSaved(stage);
    setStage("");
    setReason("");
    onDone();
  };

  return (
    <form class="change" onSubmit={submit} aria-labelledby="change-h">
      <h3 id="change-h">Change stage</h3>
      {conflict && (
        <div class="notice warn" role="alert" data-conflict={lc.version !== conflict.sent ? "" : undefined}>
          <strong>Not changed: someone else changed this customer first.</strong>{" "}
          {lc.version === conflict.sent ? (
            "Loading what it is now…"
          ) : (
            <>
              It is now in <strong>{lc.stage}</strong> (since {when(lc.enteredAt)}, by {lc.updatedBy}). Your move to{" "}
              {conflict.wanted} was not applied; choose again if it still makes sense.
            </>
          )}
        </div>
      )}
      {saved && (
        <p class="notice ok" role="status">
          Moved to {saved}.
        </p>
      )}
      <Notice problem={err} />
      {lc.allowedNextStages.length === 0 ? (
        <p class="muted">The tenant's rules allow no move from {lc.stage}.</p>
      ) : (
        <>
          <label for="next-stage">Move to</label>
          <select id="next-stage" value={stage} onChange={(e) => setStage(e.currentTarget.value)} required>
            <option value="">Choose a stage…</option>
            {lc.allowedNextStages.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
          {needsReason && (
            <>
              <label for="reason">
                Reason <span class="muted">(required for {stage})</span>
              </label>
              <input id="reason" type="text" value={reason} required aria-required="true" maxLength={200} onInput={(e) => setReason(e.currentTarget.value)} />
            </>
          )}
          <button type="submit" disabled={sending || !stage || (needsReason && !reason.trim()) || waiting > 0}>
            {sending ? "Saving…" : waiting > 0 ? `Try again in ${waiting} s` : "Change stage"}
          </button>
        </>
      )}
    </form>
  );
}
