// The gateway's clients: urql over HTTP for queries and mutations, graphql-ws for live changes.
import { Client, CombinedError, cacheExchange, fetchExchange } from "@urql/core";
import { createClient, type Client as WsClient } from "graphql-ws";

const TOKEN_KEY = "c360.token";

/** A `#token=<jwt>` in the address signs in: kept for this tab only, removed from the URL. */
export function takeTokenFromFragment(): void {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (!m) return;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
  history.replaceState(history.state, "", location.pathname + location.search);
}

export const storedToken = (): string | null => sessionStorage.getItem(TOKEN_KEY);
export const storeToken = (t: string): void => sessionStorage.setItem(TOKEN_KEY, t);
export const forgetToken = (): void => sessionStorage.removeItem(TOKEN_KEY);

export type LinkState = "connecting" | "live" | "reconnecting" | "refused";

export interface Gateway {
  client: Client;
  ws: WsClient;
  link: { state: LinkState; closeCode?: number; listeners: Set<(s: LinkState) => void> };
  close(): void;
}

export function connect(token: string): Gateway {
  const headers = { Authorization: `Bearer ${token}` };
  const link: Gateway["link"] = { state: "connecting", listeners: new Set() };
  const setState = (s: LinkState) => {
    link.state = s;
    link.listeners.forEach((l) => l(s));
  };
  const ws = createClient({
    url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`,
    connectionParams: headers, // the token travels in connection_init, never in the URL
    // A refused token (4403) will not get better by retrying; anything else may.
    shouldRetry: (e) => !(e && (e as CloseEvent).code === 4403),
    retryAttempts: Infinity,
    retryWait: (n) => new Promise((r) => setTimeout(r, Math.min(250 * 2 ** n, 2000))),
    keepAlive: 10_000,
    lazy: false, // the header says whether the tab is live, on every page
    on: {
      connected: () => setState("live"),
      // 4403: the token was refused or has expired; no retry will help.
      closed: (e) => {
        link.closeCode = (e as CloseEvent)?.code;
        setState(link.closeCode === 4403 ? "refused" : "reconnecting");
      },
    },
  });
  const client = new Client({
    url: "/graphql",
    fetchOptions: { headers },
    requestPolicy: "network-only", // the live socket says when to look again
    exchanges: [cacheExchange, fetchExchange],
  });
  return { client, ws, link, close: () => ws.dispose() };
}

export interface Problem {
  code: string;
  message: string;
  reason?: string;
  retryAfter?: number;
}

/** What went wrong, in words a person can act on. */
export function problem(err: CombinedError | Error | undefined | null): Problem | null {
  if (!err) return null;
  if (err instanceof CombinedError) {
    const g = err.graphQLErrors[0];
    if (g) {
      const ext = (g.extensions || {}) as Record<string, unknown>;
      const code = String(ext.code || "ERROR");
      const retryAfter = typeof ext.retryAfter === "number" ? ext.retryAfter : undefined;
      return { code, message: g.message, reason: ext.reason as string | undefined, retryAfter };
    }
    if (err.networkError) {
      return { code: "NETWORK", message: "The gateway cannot be reached." };
    }
  }
  return { code: "ERROR", message: err.message };
}

export function describe(p: Problem): string {
  switch (p.code) {
    case "RATE_LIMITED":
      return `Too many stage changes in the last hour. You can try again in ${p.retryAfter ?? 60} s (at ${new Date(Date.now() + (p.retryAfter ?? 60) * 1000).toLocaleTimeString()}).`;
    case "FORBIDDEN":
      return `Your role does not allow this (${p.message}). Ask a tenant admin if you need it.`;
    case "UNAUTHENTICATED":
      return "Your sign-in is no longer valid. Sign in again with a fresh link or token.";
    case "NETWORK":
      return "The gateway cannot be reached. Check your network; nothing was lost, try again when it is back.";
    default:
      return p.message;
  }
}
