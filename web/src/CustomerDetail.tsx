// One customer: profile, current stage, the stage change form, history with time per stage.
import { useEffect, useState } from "preact/hooks";
import { type Problem, problem } from "./api";
import { can, useSession } from "./context";
import { span, when } from "./format";
import { live } from "./live";
import { Notice } from "./Notice";
import { StageChange } from "./StageChange";
import type { Transition } from "./types";

const PROFILE = `
  id name email phone companyName tier tags assignedTo createdAt updatedAt
  lifecycle { id stage enteredAt updatedAt updatedBy reasonCode source version allowedNextStages }
  metrics { openSupportIssues contractRenewalCount lastContractRenewedAt daysInStage }`;
const CUSTOMER = `query Customer($id: ID!) { customer(id: $id) { ${PROFILE} } }`;
const CUSTOMER_HISTORY = `query CustomerHistory($id: ID!) { customer(id: $id) { ${PROFILE}
  stageDurations { stage entries firstEnteredAt lastEnteredAt lastExitedAt totalSeconds }
  lifecycleHistory(first: 50) { totalCount edges { node { id fromStage toStage changedAt changedBy reasonCode source } } }
} }`;

export interface Lifecycle {
  id: string;
  stage: string;
  enteredAt: string;
  updatedAt: string;
  updatedBy: string;
  reasonCode: string | null;
  source: string;
  version: number;
  allowedNextStages: string[];
}

interface Customer {
  id: string;
  name: string;
  email: string | null;
  phone: string | null;
  companyName: string | null;
  tier: string | null;
  tags: string[];
  assignedTo: string | null;
  createdAt: string;
  lifecycle: Lifecycle;
  metrics: { openSupportIssues: number; contractRenewalCount: number; lastContractRenewedAt: string | null; daysInStage: number };
  stageDurations?: { stage: string; entries: number; totalSeconds: number; lastExitedAt: string | null; lastEnteredAt: string }[];
  lifecycleHistory?: { totalCount: number; edges: { node: Transition }[] };
}

export function CustomerDetail({ id }: { id: string }) {
  const { gw, viewer } = useSession();
  const history = can(viewer, "VIEW_HISTORY");
  const [c, set] = useState<Customer | null | undefined>(undefined);
  const [err, setErr] = useState<Problem | null>(null);
  const [tick, setTick] = useState(0);

  useEffect(() => {
    let alive = true;
    const load = async () => {
      const r = await gw.client.query<{ customer: Customer | null }>(history ? CUSTOMER_HISTORY : CUSTOMER, { id }).toPromise();
      if (!alive) return;
      setErr(problem(r.error));
      if (r.data) set(r.data.customer);
    };
    void load();
    const stop = live(gw.ws, { customerId: id }, () => void load(), undefined, () => void load());
    return () => {
      alive = false;
      stop();
    };
  }, [gw, id, history, tick]);

  if (c === undefined) return err ? <Notice problem={err} onRetry={() => setTick((n) => n + 1)} /> : <p aria-live="polite">Loading…</p>;
  if (c === null) return <Notice problem={{ code: "NOT_FOUND", message: "This customer does not exist in your tenant." }} />;
  const lc = c.lifecycle;
  return (
    <article class="detail" aria-labelledby="customer-h">
      <h1 id="customer-h">{c.name}</h1>
      <Notice problem={err} onRetry={() => setTick((n) => n + 1)} />
      <div class="cards">
        <section class="card" aria-labelledby="profile-h">
          <h2 id="profile-h">Profile</h2>
          <dl>
            <dt>Company</dt>
            <dd>{c.companyName || "—"}</dd>
            <dt>Email</dt>
            <dd>{c.email || "—"}</dd>
            <dt>Phone</dt>
            <dd>{c.phone || "—"}</dd>
            <dt>Tier</dt>
            <dd>{c.tier || "—"}</dd>
            <dt>Tags</dt>
            <dd>{c.tags.join(", ") || "—"}</dd>
            <dt>Assigned to</dt>
            <dd>{c.assignedTo || "—"}</dd>
            <dt>Open support issues</dt>
            <dd>{c.metrics.openSupportIssues}</dd>
            <dt>Contract renewals</dt>
            <dd>{c.metrics.contractRenewalCount}</dd>
            <dt>Customer since</dt>
            <dd>{when(c.createdAt)}</dd>
          </dl>
        </section>
        <section class="card" aria-labelledby="stage-h">
          <h2 id="stage-h">Lifecycle stage</h2>
          <p class="current">
            <span class="stage big" data-current-stage={lc.stage}>
              {lc.stage}
            </span>
          </p>
          <dl>
            <dt>Entered</dt>
            <dd>
              <time dateTime={lc.enteredAt}>{when(lc.enteredAt)}</time> ({c.metrics.daysInStage} days)
            </dd>
            <dt>Last changed by</dt>
            <dd data-updated-by>
              {lc.updatedBy} <span class="muted">via {lc.source.toLowerCase().replace("_", " ")}</span>
            </dd>
            {lc.reasonCode && (
              <>
                <dt>Reason</dt>
                <dd>{lc.reasonCode}</dd>
              </>
            )}
          </dl>
          {can(viewer, "UPDATE_LIFECYCLE") && (
            <StageChange key={c.id} customerId={c.id} lifecycle={lc} onDone={() => setTick((n) => n + 1)} />
          )}
        </section>
      </div>
      {history && c.lifecycleHistory && c.stageDurations && <History c={c} />}
    </article>
  );
}

function History({ c }: { c: Customer }) {
  const items = c.lifecycleHistory!.edges.map((e) => e.node);
  return (
    <section class="card history" aria-labelledby="history-h">
      <h2 id="history-h">History</h2>
      <h3>Time in each stage</h3>
      <table class="durations">
        <thead>
          <tr>
            <th scope="col">Stage</th>
            <th scope="col">Times entered</th>
            <th scope="col">Total time</th>
          </tr>
        </thead>
        <tbody>
          {c.stageDurations!.map((d) => (
            <tr key={d.stage} data-duration-stage={d.stage}>
              <td>{d.stage}</td>
              <td>{d.entries}</td>
              <td>{span(d.totalSeconds)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h3>Timeline</h3>
      <ol class="timeline" aria-label="Stage changes, newest first">
        {items.map((t, i) => {
          const until = i === 0 ? Date.now() : Date.parse(items[i - 1].changedAt);
          return (
            <li key={t.id} data-transition-id={t.id} data-to-stage={t.toStage}>
              <div class="what">
                {t.fromStage ? (
                  <>
                    {t.fromStage} → <strong>{t.toStage}</strong>
                  </>
                ) : (
                  <>
                    Created in <strong>{t.toStage}</strong>
                  </>
                )}
              </div>
              <div class="meta">
                <time dateTime={t.changedAt}>{when(t.changedAt)}</time> · {t.changedBy} · {t.source.toLowerCase().replace("_", " ")}
                {t.reasonCode && <> · reason: <span class="reason">{t.reasonCode}</span></>}
              </div>
              <div class="muted">
                {i === 0 ? "in this stage for " : "stayed "}
                {span((until - Date.parse(t.changedAt)) / 1000)}
              </div>
            </li>
          );
        })}
      </ol>
      {c.lifecycleHistory!.totalCount > items.length && <p class="muted">Showing the latest {items.length} of {c.lifecycleHistory!.totalCount} changes.</p>}
    </section>
  );
}
