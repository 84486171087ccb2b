// Counts per stage (lifecycleSummary) as a bar chart; live: any change refreshes it.
import { useEffect, useState } from "preact/hooks";
import { type Problem, problem } from "./api";
import { useSession } from "./context";
import { live } from "./live";
import { Notice } from "./Notice";
import { follow, href, type Params } from "./route";

const SUMMARY = `query Summary { lifecycleSummary { total generatedAt stages { stage count } } }`;

interface Summary {
  total: number;
  generatedAt: string;
  stages: { stage: string; count: number }[];
}

export function Overview({ current, params }: { current: string; params: Params }) {
  const { gw } = useSession();
  const [summary, set] = useState<Summary | null>(null);
  const [err, setErr] = useState<Problem | null>(null);

  useEffect(() => {
    let timer = 0;
    let alive = true;
    const load = async () => {
      const r = await gw.client.query<{ lifecycleSummary: Summary }>(SUMMARY, {}).toPromise();
      if (!alive) return;
      setErr(problem(r.error));
      if (r.data) set(r.data.lifecycleSummary);
    };
    void load();
    const stop = live(gw.ws, {}, () => {
      clearTimeout(timer);
      timer = window.setTimeout(load, 200); // a burst of changes: one refresh
    });
    return () => {
      alive = false;
      clearTimeout(timer);
      stop();
    };
  }, [gw]);

  const max = Math.max(1, ...(summary?.stages.map((s) => s.count) ?? [1]));
  return (
    <section class="overview" aria-labelledby="overview-h">
      <h2 id="overview-h">
        Stage overview {summary && <span class="muted">· {summary.total} customers</span>}
      </h2>
      <Notice problem={err} />
      {summary && (
        <ul class="bars" aria-label="Customers per stage">
          {summary.stages.map((s) => {
            const target = { ...params, customer: "", stage: s.stage === current ? "" : s.stage };
            return (
              <li key={s.stage}>
                <a
                  href={href(target)}
                  onClick={(e) => follow(e, target)}
                  aria-current={s.stage === current ? "true" : undefined}
                  aria-label={`${s.stage}: ${s.count} customers${s.stage === current ? " (shown below; select to show all)" : ""}`}
                  data-stage={s.stage}
                >
                  <span class="bar-label">{s.stage}</span>
                  <span class="bar-track" aria-hidden="true">
                    <span class="bar" style={{ width: `${(100 * s.count) / max}%` }} />
                  </span>
                  <span class="bar-count" data-count={s.count}>
                    {s.count}
                  </span>
                </a>
              </li>
            );
          })}
        </ul>
      )}
    </section>
  );
}
