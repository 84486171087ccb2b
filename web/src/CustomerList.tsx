// The customer list: filters in the address, pages of 50, live.
//
// Filtered by stage, it follows lifecycleChanged(stage) from the position read before its first
// page, then from the cursor of its last event: a
// customer moved in appears, one moved out disappears. Filtered otherwise (tier, tag, assignee,
// name) a stage change cannot move anyone in or out: the rows it touches are updated in place
// and the list says how fresh it is.
import { useEffect, useRef, useState } from "preact/hooks";
import { type Problem, problem } from "./api";
import { useSession } from "./context";
import { ago, when } from "./format";
import { live } from "./live";
import { Notice } from "./Notice";
import { follow, href, navigate, type Params } from "./route";
import type { ChangeEvent, Order, Row } from "./types";

const PAGE = 50;
const POSITION = `query Position { lifecyclePosition }`;

const CUSTOMERS = `query Customers($filter: CustomerFilter, $orderBy: CustomerOrder, $first: Int, $after: String) {
  customers(filter: $filter, orderBy: $orderBy, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { node { id name companyName email tier tags assignedTo createdAt updatedAt
      lifecycle { id stage enteredAt updatedBy version } } }
  }
}`;

export const ORDERS: [Order, string][] = [
  ["STAGE_ENTERED_AT_DESC", "Entered stage, newest first"],
  ["NAME_ASC", "Name, A to Z"],
  ["UPDATED_AT_DESC", "Last updated, newest first"],
  ["CREATED_AT_DESC", "Created, newest first"],
];
const TIERS = ["FREE", "BASIC", "PRO", "ENTERPRISE"];

interface Page {
  rows: Row[];
  total: number;
  next: string | null;
}

function filterOf(p: Params) {
  return {
    stage: p.stage || null,
    tier: p.tier || null,
    tag: p.tag || null,
    assignedTo: p.assignee || null,
    search: p.q || null,
  };
}

/** Whether a customer passes the list's other filters (the stage is the subscription's). */
function matches(c: Row, p: Params): boolean {
  if (p.tier && c.tier !== p.tier) return false;
  if (p.tag && !c.tags.includes(p.tag)) return false;
  if (p.assignee && c.assignedTo !== p.assignee) return false;
  if (p.q) {
    const q = p.q.toLowerCase();
    const hit =
      c.name.toLowerCase().includes(q) || (c.companyName || "").toLowerCase().includes(q) || (c.email || "").toLowerCase() === q;
    if (!hit) return false;
  }
  return true;
}

const sortKey: Record<Order, (a: Row, b: Row) => number> = {
  STAGE_ENTERED_AT_DESC: (a, b) => b.lifecycle.enteredAt.localeCompare(a.lifecycle.enteredAt),
  NAME_ASC: (a, b) => a.name.localeCompare(b.name),
  UPDATED_AT_DESC: (a, b) => b.updatedAt.localeCompare(a.updatedAt),
  CREATED_AT_DESC: (a, b) => b.createdAt.localeCompare(a.createdAt),
};

export function apply(page: Page, e: ChangeEvent, p: Params, order: Order): Page {
  const c = e.customer;
  const at = page.rows.findIndex((r) => r.id === c.id);
  if (p.stage) {
    if (e.entered && matches(c, p)) {
      const fresh = { ...c, lifecycle: { ...c.lifecycle, stage: e.transition.toStage, enteredAt: e.transition.changedAt } };
      const rows = at >= 0 ? page.rows.map((r, i) => (i === at ? fresh : r)) : [...page.rows, fresh];
      return { ...page, rows: rows.sort(sortKey[order]), total: page.total + (at >= 0 ? 0 : 1) };
    }
    if (!e.entered && at >= 0) {
      return { ...page, rows: page.rows.filter((r) => r.id !== c.id), total: page.total - 1 };
    }
    return page;
  }
  if (at < 0) return page;
  const rows = page.rows.map((r, i) => (i === at ? c : r));
  return { ...page, rows: order === "UPDATED_AT_DESC" || order === "STAGE_ENTERED_AT_DESC" ? rows.sort(sortKey[order]) : rows };
}

export function CustomerList({ params }: { params: Params }) {
  const { gw, config } = useSession();
  const order = (ORDERS.some(([o]) => o === params.order) ? params.order : "STAGE_ENTERED_AT_DESC") as Order;
  const [page, setPage] = useState<Page | null>(null);
  const [err, setErr] = useState<Problem | null>(null);
  const [fresh, setFresh] = useState<string>(new Date().toISOString());
  const [busy, setBusy] = useState(false);
  const [attempt, setAttempt] = useState(0);
  const paramsRef = useRef(params);
  paramsRef.current = params;
  const key = JSON.stringify([filterOf(params), order]);

  const fetchPage = async (after: string | null) =>
    gw.client
      .query<{ customers: { totalCount: number; pageInfo: { hasNextPage: boolean; endCursor: string | null }; edges: { node: Row }[] } }>(
        CUSTOMERS,
        { filter: filterOf(params), orderBy: order, first: PAGE, after },
      )
      .toPromise();

  useEffect(() => {
    let alive = true;
    const pending: ChangeEvent[] = []; // changes seen while the first page is on its way
    let loaded = false;
    let stop = () => {};
    setPage(null);
    // The position first, then the page and the subscription from that position: every
    // change committed after it reaches the list (applying one the page already shows is
    // harmless), none before the socket was up is lost.
    void gw.client
      .query<{ lifecyclePosition: string }>(POSITION, {})
      .toPromise()
      .then((position) => {
        if (!alive) return;
        setErr(problem(position.error));
        if (!position.data) return;
        stop = live(
          gw.ws,
          { stage: params.stage || null },
          (e) => {
            if (!loaded) return void pending.push(e);
            setPage((pg) => (pg ? apply(pg, e, paramsRef.current, order) : pg));
            setFresh(new Date().toISOString());
          },
          () => {},
          () => setAttempt((n) => n + 1),
          position.data.lifecyclePosition,
        );
        return fetchPage(null).then((r) => {
          if (!alive) return;
          setErr(problem(r.error));
          if (!r.data) return;
          const c = r.data.customers;
          let pg: Page = { rows: c.edges.map((e) => e.node), total: c.totalCount, next: c.pageInfo.hasNextPage ? c.pageInfo.endCursor : null };
          loaded = true;
          for (const e of pending) pg = apply(pg, e, paramsRef.current, order);
          setPage(pg);
          setFresh(new Date().toISOString());
        });
      });
    return () => {
      alive = false;
      stop();
    };
  }, [gw, key, attempt]);

  const more = async () => {
    if (!page?.next) return;
    setBusy(true);
    const r = await fetchPage(page.next);
    setBusy(false);
    setErr(problem(r.error));
    if (!r.data) return;
    const c = r.data.customers;
    setPage((pg) =>
      pg && {
        rows: [...pg.rows, ...c.edges.map((e) => e.node).filter((n) => !pg.rows.some((r) => r.id === n.id))],
        total: c.totalCount,
        next: c.pageInfo.hasNextPage ? c.pageInfo.endCursor : null,
      },
    );
  };

  return (
    <section class="list" aria-labelledby="list-h">
      <h2 id="list-h">
        {params.stage ? `${params.stage} customers` : "All customers"}
        {page && <span class="muted"> · {page.total}</span>}
      </h2>
      <Filters params={params} stages={config.stages} order={order} />
      <Notice problem={err} onRetry={err ? () => setAttempt((n) => n + 1) : undefined} />
      <p class="freshness muted" aria-live="off">
        {params.stage ? "Live: customers moving in or out appear or disappear at once." : `Stages shown live; list as of ${when(fresh)}.`}
      </p>
      {!page && !err && <p aria-live="polite">Loading…</p>}
      {page && (
        <table class="customers">
          <caption class="sr-only">Customers, {ORDERS.find(([o]) => o === order)?.[1]}</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Company</th>
              <th scope="col">Stage</th>
              <th scope="col">In stage since</th>
            </tr>
          </thead>
          <tbody>
            {page.rows.length === 0 && (
              <tr>
                <td colSpan={4} class="muted">
                  No customers match.
                </td>
              </tr>
            )}
            {page.rows.map((c) => (
              <tr key={c.id} data-customer-id={c.id} data-stage={c.lifecycle.stage}>
                <td>
                  <a href={href({ customer: c.id })} onClick={(e) => follow(e, { customer: c.id })}>
                    {c.name}
                  </a>
                </td>
                <td>{c.companyName || "—"}</td>
                <td>
                  <span class="stage">{c.lifecycle.stage}</span>
                </td>
                <td>
                  <time dateTime={c.lifecycle.enteredAt} title={when(c.lifecycle.enteredAt)}>
                    {when(c.lifecycle.enteredAt)}
                  </time>{" "}
                  <span class="muted">({ago(c.lifecycle.enteredAt)})</span>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {page?.next && (
        <button type="button" onClick={more} disabled={busy}>
          {busy ? "Loading…" : `More (showing ${page.rows.length} of ${page.total})`}
        </button>
      )}
    </section>
  );
}

function Filters({ params, stages, order }: { params: Params; stages: string[]; order: Order }) {
  const [text, setText] = useState({ q: params.q || "", tag: params.tag || "", assignee: params.assignee || "" });
  const timer = useRef(0);
  useEffect(() => setText({ q: params.q || "", tag: params.tag || "", assignee: params.assignee || "" }), [params.q, params.tag, params.assignee]);
  const set = (k: string, v: string, replace = false) => navigate({ ...params, [k]: v }, replace);
  const typed = (k: "q" | "tag" | "assignee", v: string) => {
    setText((t) => ({ ...t, [k]: v }));
    clearTimeout(timer.current);
    timer.current = window.setTimeout(() => set(k, v.trim(), true), 300);
  };
  return (
    <form class="filters" role="search" aria-label="Filter customers" onSubmit={(e) => e.preventDefault()}>
      <label>
        Stage
        <select value={params.stage || ""} onChange={(e) => set("stage", e.currentTarget.value)}>
          <option value="">All stages</option>
          {stages.map((s) => (
            <option key={s} value={s}>
              {s}
            </option>
          ))}
        </select>
      </label>
      <label>
        Tier
        <select value={params.tier || ""} onChange={(e) => set("tier", e.currentTarget.value)}>
          <option value="">All tiers</option>
          {TIERS.map((t) => (
            <option key={t} value={t}>
              {t[0] + t.slice(1).toLowerCase()}
            </option>
          ))}
        </select>
      </label>
      <label>
        Tag
        <input type="text" value={text.tag} onInput={(e) => typed("tag", e.currentTarget.value)} />
      </label>
      <label>
        Assignee
        <input type="text" value={text.assignee} onInput={(e) => typed("assignee", e.currentTarget.value)} />
      </label>
      <label>
        Search name or company
        <input type="search" value={text.q} onInput={(e) => typed("q", e.currentTarget.value)} />
      </label>
      <label>
        Order
        <select value={order} onChange={(e) => set("order", e.currentTarget.value)}>
          {ORDERS.map(([o, label]) => (
            <option key={o} value={o}>
              {label}
            </option>
          ))}
        </select>
      </label>
    </form>
  );
}
