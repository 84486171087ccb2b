import { render } from "preact";
import { useCallback, useEffect, useMemo, useState } from "preact/hooks";
import { connect, forgetToken, type Problem, problem, storedToken, storeToken, takeTokenFromFragment } from "./api";
import { Admin } from "./Admin";
import { can, type Session, SessionContext, useLink, useSession } from "./context";
import { CustomerDetail } from "./CustomerDetail";
import { CustomerList } from "./CustomerList";
import { Notice } from "./Notice";
import { Overview } from "./Overview";
import { follow, href, useParams } from "./route";
import type { StageConfig, Viewer } from "./types";

takeTokenFromFragment(); // before anything else: the token leaves the address bar at once

const START = `query Start {
  viewer { id subject tenantId roles permissions }
  lifecycleStageConfig { id stages requiredReasonCodes transitions { from to } initialStage
    eventRules { eventType toStage } version updatedAt updatedBy }
}`;

function SignIn({ onToken, problem: p }: { onToken: (t: string) => void; problem: Problem | null }) {
  const [value, set] = useState("");
  return (
    <main class="signin">
      <h1>Customer360</h1>
      <Notice problem={p} />
      <form
        onSubmit={(e) => {
          e.preventDefault();
          const t = value.trim().replace(/^Bearer\s+/i, "");
          if (t) onToken(t);
        }}
      >
        <label for="token">Access token</label>
        <p class="hint" id="token-hint">
          Open the sign-in link <code>c360 dev</code> prints, or paste a token (it stays in this tab only).
        </p>
        <textarea id="token" aria-describedby="token-hint" rows={4} value={value} onInput={(e) => set(e.currentTarget.value)} />
        <button type="submit">Sign in</button>
      </form>
    </main>
  );
}

function App() {
  const [token, setToken] = useState(storedToken);
  const [session, setSession] = useState<Session | null>(null);
  const [failure, setFailure] = useState<Problem | null>(null);
  const gw = useMemo(() => (token ? connect(token) : null), [token]);

  const signOut = useCallback(() => {
    forgetToken();
    setSession(null);
    setToken(null);
  }, []);

  useEffect(() => {
    if (!gw) return;
    let alive = true;
    const load = async () => {
      const r = await gw.client.query<{ viewer: Viewer; lifecycleStageConfig: StageConfig }>(START, {}).toPromise();
      if (!alive) return;
      const p = problem(r.error);
      if (p || !r.data) {
        setFailure(p);
        if (p?.code === "UNAUTHENTICATED") signOut();
        return;
      }
      setFailure(null);
      const data = r.data;
      setSession({ gw, viewer: data.viewer, config: data.lifecycleStageConfig, reloadConfig: load, signOut });
    };
    void load();
    return () => {
      alive = false;
      gw.close();
    };
  }, [gw, signOut]);

  if (!token) {
    return (
      <SignIn
        problem={failure}
        onToken={(t) => {
          storeToken(t);
          setToken(t);
        }}
      />
    );
  }
  if (!session) {
    return (
      <main class="signin">
        <Notice problem={failure} onRetry={failure ? () => setToken(storedToken()) : undefined} />
        {!failure && <p aria-live="polite">Signing in…</p>}
        {failure && (
          <button type="button" onClick={signOut}>
            Use another token
          </button>
        )}
      </main>
    );
  }
  return (
    <SessionContext.Provider value={session}>
      <Shell />
    </SessionContext.Provider>
  );
}

function Shell() {
  const s = useSession();
  const params = useParams();
  const link = useLink(s.gw);
  const admin = can(s.viewer, "CONFIGURE_STAGES");
  const view = params.customer ? "customer" : params.view === "admin" && admin ? "admin" : "list";
  useEffect(() => {
    document.title = { customer: "Customer", admin: "Stage configuration", list: "Customers" }[view] + " · Customer360";
  }, [view]);
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <a class="brand" href={href({})} onClick={(e) => follow(e, {})}>
          Customer360
        </a>
        <nav aria-label="Main">
          <a href={href({})} aria-current={view === "list" ? "page" : undefined} onClick={(e) => follow(e, {})}>
            Customers
          </a>
          {admin && (
            <a
              href={href({ view: "admin" })}
              aria-current={view === "admin" ? "page" : undefined}
              onClick={(e) => follow(e, { view: "admin" })}
            >
              Stage configuration
            </a>
          )}
        </nav>
        <span class={`link-state ${link}`} role="status" data-link={link} data-close-code={s.gw.link.closeCode}>
          {
            {
              live: "Live",
              connecting: "Connecting…",
              reconnecting: "Connection lost, reconnecting…",
              refused: "Signed out: your token was refused or has expired",
            }[link]
          }
        </span>
        <span class="who">
          {s.viewer.subject} · {s.viewer.roles.map((r) => r.replace(/^ROLE_/, "").toLowerCase().replace(/_/g, " ")).join(", ")}
        </span>
        <button type="button" class="link" onClick={s.signOut}>
          Sign out
        </button>
      </header>
      <main id="main" tabIndex={-1}>
        {view === "customer" && <CustomerDetail id={params.customer} />}
        {view === "admin" && <Admin />}
        {view === "list" && (
          <>
            <Overview current={params.stage || ""} params={params} />
            <CustomerList params={params} />
          </>
        )}
      </main>
    </>
  );
}

render(<App />, document.getElementById("app")!);
